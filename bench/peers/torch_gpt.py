"""PyTorch CPU peer for bench/gpt.ts: a GPT in plain torch, timed like attn's.

Input: one JSON object on stdin (or as argv[1]):
  {"torch_threads": 1, "section": "train", "cfg": {GPT config, attn's field names},
   "batch": 8, "warmup_steps": 2, "warmup_s": 1, "min_steps": 3, "min_s": 10}
  {"torch_threads": 1, "section": "infer", "cfg": {...}, "prefill_tokens": 128,
   "decode_tokens": 32, "warmup_steps": 1, "warmup_s": 1, "min_s": 10, "min_reps": 1,
   "parts": ["prefill", "decode"]}
Output: one JSON object on stdout. OpenBLAS threads: set OPENBLAS_NUM_THREADS in the environment.
The model matches attn's GPT: pre-LN blocks, GELU (tanh) MLP, learned positions, tied head,
optional biases, dropout 0. Attention is written out (torch 1.13 has no scaled_dot_product_attention;
newer torch uses it).
"""
import json
import math
import os
import resource
import sys
import time


def rss_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def blas():
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from numpy_kernels import blas_info  # the kernel peer's probe (OpenBLAS C API)

        return blas_info()
    except Exception as e:  # numpy missing, or the probe failed
        return {"error": str(e)}


def warm(fn, spec):
    """Calls fn at least warmup_steps times and for at least warmup_s seconds."""
    t0 = time.perf_counter()
    n = 0
    while n < spec.get("warmup_steps", 1) or time.perf_counter() - t0 < spec.get("warmup_s", 0):
        fn()
        n += 1


def build(torch, cfg, device="cpu", dtype=None):
    nn = torch.nn
    F = torch.nn.functional
    C, H, L, V, Tmax = cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["vocab_size"], cfg["block_size"]
    bias = bool(cfg.get("bias", False))
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    sdpa = getattr(F, "scaled_dot_product_attention", None)

    class LayerNorm(nn.Module):
        # torch 1.13's nn.LayerNorm cannot drop its bias
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(C))
            self.bias = nn.Parameter(torch.zeros(C)) if bias else None

        def forward(self, x):
            return F.layer_norm(x, (C,), self.weight, self.bias, eps)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = LayerNorm()
            self.c_attn = nn.Linear(C, 3 * C, bias=bias)
            self.attn_proj = nn.Linear(C, C, bias=bias)
            self.ln_2 = LayerNorm()
            self.c_fc = nn.Linear(C, 4 * C, bias=bias)
            self.mlp_proj = nn.Linear(4 * C, C, bias=bias)

        def attention(self, x, cache, layer):
            B, T, _ = x.shape
            D = C // H
            q, k, v = self.c_attn(x).split(C, dim=2)
            q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            k = k.view(B, T, H, D).transpose(1, 2)
            v = v.view(B, T, H, D).transpose(1, 2)
            past = 0
            if cache is not None:
                past = cache.length
                cache.k[layer][:, :, past:past + T] = k
                cache.v[layer][:, :, past:past + T] = v
                k = cache.k[layer][:, :, :past + T]
                v = cache.v[layer][:, :, :past + T]
            if sdpa is not None:
                if past == 0:
                    y = sdpa(q, k, v, is_causal=T > 1)
                else:
                    y = sdpa(q, k, v, attn_mask=self.mask[past:past + T, :past + T] if T > 1 else None)
            else:
                att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
                if T > 1:
                    att = att.masked_fill(~self.mask[past:past + T, :past + T], float("-inf"))
                y = F.softmax(att, dim=-1) @ v
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.attn_proj(y)

        def forward(self, x, cache=None, layer=0):
            x = x + self.attention(self.ln_1(x), cache, layer)
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class KVCache:
        def __init__(self, B):
            D = C // H
            self.k = [torch.zeros(B, H, Tmax, D, device=device, dtype=dtype) for _ in range(L)]
            self.v = [torch.zeros(B, H, Tmax, D, device=device, dtype=dtype) for _ in range(L)]
            self.length = 0

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(V, C)
            self.wpe = nn.Embedding(Tmax, C)
            self.h = nn.ModuleList([Block() for _ in range(L)])
            self.ln_f = LayerNorm()
            mask = torch.tril(torch.ones(Tmax, Tmax, dtype=torch.bool, device=device))
            for b in self.h:
                b.mask = mask
            for name, p in self.named_parameters():  # GPT-2 init
                if name.endswith("proj.weight"):
                    torch.nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * L))
                elif p.dim() >= 2:
                    torch.nn.init.normal_(p, 0.0, 0.02)
                elif name.endswith("bias"):
                    torch.nn.init.zeros_(p)

        def forward(self, idx, targets=None, cache=None):
            T = idx.shape[1]
            past = cache.length if cache is not None else 0
            pos = torch.arange(past, past + T, device=idx.device)
            x = self.wte(idx) + self.wpe(pos)
            for i, b in enumerate(self.h):
                x = b(x, cache, i)
            if cache is not None:
                cache.length += T
            logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
            if targets is None:
                return logits, None
            return logits, F.cross_entropy(logits.view(-1, V), targets.view(-1))

    return GPT, KVCache


def train(torch, spec, out):
    cfg = spec["cfg"]
    GPT, _ = build(torch, cfg)
    torch.manual_seed(0)
    model = GPT()
    model.train()
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3)
    B, T, V = spec["batch"], cfg["block_size"], cfg["vocab_size"]

    def step():
        x = torch.randint(V, (B, T))
        y = torch.randint(V, (B, T))
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    warm(step, spec)
    times = []
    t0 = time.perf_counter()
    while len(times) < spec.get("min_steps", 3) or time.perf_counter() - t0 < spec.get("min_s", 10):
        ts = time.perf_counter()
        step()
        times.append(time.perf_counter() - ts)
    elapsed = time.perf_counter() - t0
    s = sorted(times)
    out.update(steps=len(times), elapsed_s=elapsed, tokens_per_s=len(times) * B * T / elapsed,
               best_step_ms=s[0] * 1e3, median_step_ms=s[(len(s) - 1) // 2] * 1e3,
               params=sum(p.numel() for p in params))


def infer(torch, spec, out):
    cfg = spec["cfg"]
    # "device": "cuda" and "dtype": "float16" or "bfloat16" (every weight and activation in
    # that type, model.to(dtype)): the GPU benchmark's peer (bench/gpu.ts --only decode), and
    # the bfloat16 peer of bench/gpt.ts's bf16 column.
    device = spec.get("device", "cpu")
    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(spec.get("dtype", "float32"))
    GPT, KVCache = build(torch, cfg, device, dt)
    out["rss_before_model"] = rss_bytes()
    torch.manual_seed(0)
    t = time.perf_counter()
    model = GPT().to(device)
    if dt is not None:
        model.to(dt)
    model.eval()
    out["init_s"] = time.perf_counter() - t
    V, P, N = cfg["vocab_size"], spec["prefill_tokens"], spec["decode_tokens"]
    min_s, min_reps = spec.get("min_s", 10), spec.get("min_reps", 1)
    parts = spec.get("parts", ["prefill", "decode"])
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(V, (1, P), generator=g).to(device)
    with torch.no_grad():
        if "prefill" in parts:
            # Reading one logit waits for the device (a no-op on the CPU), as attn reads the last row.
            warm(lambda: model(prompt)[0][0, -1, 0].item(), spec)
            times = []
            t0 = time.perf_counter()
            while len(times) < min_reps or time.perf_counter() - t0 < min_s:
                ts = time.perf_counter()
                model(prompt)[0][0, -1, 0].item()
                times.append(time.perf_counter() - ts)
            s = sorted(times)
            out["prefill"] = {"reps": len(times), "best_ms": s[0] * 1e3, "median_ms": s[(len(s) - 1) // 2] * 1e3,
                              "tokens_per_s": P * len(times) / sum(times)}

        def generate(n):
            """Greedy: prefill the prompt into a fresh cache, then n single-token steps; returns their seconds."""
            cache = KVCache(1)
            logits, _ = model(prompt, cache=cache)
            tok = int(logits[0, -1].argmax())
            ts = time.perf_counter()
            for _ in range(n):
                logits, _ = model(torch.tensor([[tok]], device=device), cache=cache)
                tok = int(logits[0, -1].argmax())
            return time.perf_counter() - ts

        if "decode" in parts:
            warm(lambda: generate(N), spec)
            total, reps = 0.0, 0
            while reps < min_reps or total < min_s:
                total += generate(N)
                reps += 1
            out["decode"] = {"reps": reps, "tokens": N * reps, "elapsed_s": total, "tokens_per_s": N * reps / total}
    out["rss_after"] = rss_bytes()
    out["peak_rss"] = peak_rss_bytes()
    out["params"] = sum(p.numel() for p in model.parameters())


def main():
    raw = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    spec = json.loads(raw)
    try:
        import torch
    except Exception as e:
        print(json.dumps({"error": f"torch is not importable: {e}"}))
        return
    torch.set_num_threads(spec.get("torch_threads", 1))
    out = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "openblas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"), "blas": blas(),
           "sdpa": hasattr(torch.nn.functional, "scaled_dot_product_attention")}
    if spec["section"] == "train":
        train(torch, spec, out)
    else:
        infer(torch, spec, out)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
