"""OpenBLAS peer for bench/kernels.ts: times float32 kernels in numpy.

Input: one JSON object as argv[1], or on stdin when no argument is given:
  {"warmup_s": 0.4, "samples": 5, "min_sample_s": 0.05, "max_s": 3,
   "matmul":    [{"name": ..., "M": .., "K": .., "N": .., "transA": false, "transB": true}],
   "attention": [{"name": ..., "B": 1, "H": 6, "T": 256, "D": 64, "causal": true}],
   "layernorm": [{"name": ..., "rows": 2048, "n": 384}]}
Output: JSON on stdout with the BLAS in use and ms per call (best and median) for each item.
Thread count: set OPENBLAS_NUM_THREADS in the environment of this process.
"""
import json
import os
import sys
import time


def blas_info():
    """Which BLAS library and kernel (core type) numpy runs on, as far as can be told."""
    info = {"library": None, "corename": None, "config": None, "threads": None, "source": None}
    try:
        import threadpoolctl  # optional

        for p in threadpoolctl.threadpool_info():
            if p.get("user_api") == "blas":
                info.update(library=p.get("filepath"), corename=p.get("architecture"),
                            config=p.get("internal_api"), threads=p.get("num_threads"), source="threadpoolctl")
                return info
    except Exception:
        pass
    # OpenBLAS answers for itself through its C API; find the loaded library in our memory map.
    try:
        import ctypes

        libs = []
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "blas" in path.lower() and path.endswith((".so", ".so.0", ".so.3")) and path not in libs:
                    libs.append(path)
        libs.sort(key=lambda p: not os.path.basename(p).startswith("libopenblas"))
        info["library"] = libs[0] if libs else None
        for path in libs:
            lib = ctypes.CDLL(path)
            if not hasattr(lib, "openblas_get_corename"):
                continue
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            info.update(library=path, corename=lib.openblas_get_corename().decode(),
                        config=lib.openblas_get_config().decode(), threads=lib.openblas_get_num_threads(),
                        source="openblas C API")
            return info
    except Exception:
        pass
    return info


def timeit(fn, cfg):
    """ms per call: warm up, pick repetitions so a sample lasts min_sample_s, then sample."""
    t0 = time.perf_counter()
    calls = 0
    while calls < 1 or time.perf_counter() - t0 < cfg["warmup_s"]:
        fn()
        calls += 1
    t1 = time.perf_counter()
    fn()
    single = max(time.perf_counter() - t1, 1e-6)
    reps = max(1, int(-(-cfg["min_sample_s"] // single)))
    samples = []
    start = time.perf_counter()
    for _ in range(cfg["samples"]):
        ts = time.perf_counter()
        for _ in range(reps):
            fn()
        samples.append((time.perf_counter() - ts) / reps * 1e3)
        if time.perf_counter() - start > cfg["max_s"]:
            break
    s = sorted(samples)
    return {"best_ms": s[0], "median_ms": s[(len(s) - 1) // 2], "samples_ms": samples, "reps": reps}


def bench_matmul(np, spec, cfg, rng):
    M, K, N = spec["M"], spec["K"], spec["N"]
    # Stored as the attn benchmark stores them: A (K, M) when transposed, B (N, K) when transposed.
    a = rng.standard_normal((K, M) if spec.get("transA") else (M, K), dtype=np.float32)
    b = rng.standard_normal((N, K) if spec.get("transB") else (K, N), dtype=np.float32)
    a = a.T if spec.get("transA") else a  # a view: BLAS reads it transposed, no copy
    b = b.T if spec.get("transB") else b
    out = np.empty((M, N), dtype=np.float32)
    r = timeit(lambda: np.matmul(a, b, out=out), cfg)
    r["name"] = spec["name"]
    return r


def bench_attention(np, spec, cfg, rng):
    """Naive attention: materialises softmax(q kᵀ) (B, H, T, T), then forward + backward."""
    B, H, T, D = spec["B"], spec["H"], spec["T"], spec["D"]
    scale = 1.0 / np.sqrt(D)
    q, k, v, go = (rng.standard_normal((B, H, T, D), dtype=np.float32) for _ in range(4))
    mask = np.triu(np.ones((T, T), dtype=bool), 1) if spec.get("causal") else None
    s = np.empty((B, H, T, T), dtype=np.float32)

    def step():
        p = np.matmul(q, k.transpose(0, 1, 3, 2), out=s)  # p is s (in place throughout)
        p *= scale
        if mask is not None:
            p[..., mask] = -np.inf
        p -= p.max(axis=-1, keepdims=True)
        np.exp(p, out=p)
        p /= p.sum(axis=-1, keepdims=True)
        o = p @ v
        # backward
        gv = p.transpose(0, 1, 3, 2) @ go
        dp = go @ v.transpose(0, 1, 3, 2)
        dp -= (go * o).sum(axis=-1, keepdims=True)
        dp *= p
        dp *= scale
        gq = dp @ k
        gk = dp.transpose(0, 1, 3, 2) @ q
        return gq, gk, gv

    r = timeit(step, cfg)
    r["name"] = spec["name"]
    return r


def bench_layernorm(np, spec, cfg, rng):
    """Unfused numpy layer norm with weight and bias; forward and backward timed apart."""
    rows, n = spec["rows"], spec["n"]
    x = rng.standard_normal((rows, n), dtype=np.float32)
    dy = rng.standard_normal((rows, n), dtype=np.float32)
    w = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    eps = np.float32(1e-5)

    def fwd():
        mean = x.mean(axis=1, keepdims=True)
        xc = x - mean
        rstd = 1.0 / np.sqrt((xc * xc).mean(axis=1, keepdims=True) + eps)
        return xc * rstd * w + b, mean, rstd

    _, mean, rstd = fwd()

    def bwd():
        xhat = (x - mean) * rstd
        g = dy * w
        dx = rstd * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
        return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)

    return {"name": spec["name"], "forward": timeit(fwd, cfg), "backward": timeit(bwd, cfg)}


def main():
    raw = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    spec = json.loads(raw)
    cfg = {"warmup_s": spec.get("warmup_s", 0.4), "samples": spec.get("samples", 5),
           "min_sample_s": spec.get("min_sample_s", 0.05), "max_s": spec.get("max_s", 5.0)}
    try:
        import numpy as np
    except ImportError as e:
        print(json.dumps({"error": f"numpy is not importable: {e}"}))
        return 2
    rng = np.random.default_rng(0)
    out = {
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "blas": blas_info(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_"))},
        "matmul": [bench_matmul(np, s, cfg, rng) for s in spec.get("matmul", [])],
        "attention": [bench_attention(np, s, cfg, rng) for s in spec.get("attention", [])],
        "layernorm": [bench_layernorm(np, s, cfg, rng) for s in spec.get("layernorm", [])],
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
