"""PyTorch CUDA peer for bench/gpu.ts: float32 matmul and GPT training throughput.

Input: one JSON object on stdin (or as argv[1]):
  {"parts": ["matmul", "train"], "quick": false, "matmul_n": 4096,
   "matmul_timing": {"warmup": 5, "samples": 5, "min_sample_ms": 1000},
   "cfg": {attn's GPTConfig: n_layer, n_head, n_embd, block_size, vocab_size, dropout, bias, ...},
   "batch": 64, "lr": 1e-3, "weight_decay": 0.1, "beta2": 0.99, "grad_clip": 1.0,
   "warmup_steps": 5, "min_steps": 20, "min_s": 10}
Output: one JSON object on stdout (last line): {"torch", "cuda", "device", "device_name",
  "matmul": {"tf32_off": {...}, "tf32_on": {...}}, "train": {"tf32_off": {...}, "tf32_on": {...}}},
or {"error": "..."}.

Each part runs with TF32 off (torch.backends.cuda.matmul.allow_tf32 = False, or fp32_precision
"ieee" where torch has it: the float32 that attn computes) and on (nanoGPT's setting); the
matmul's max_rel_err shows which ran (TF32 makes it one to two orders of magnitude larger). The model is nanoGPT's GPT in eager mode (no
torch.compile): pre-LN blocks, GELU (tanh) MLP, learned positions, tied head, biases per cfg,
dropout on embeddings, attention (scaled_dot_product_attention) and residuals; fused AdamW with
weight decay on matrices, global-norm clipping; batches of Tiny Shakespeare characters.
Without CUDA it refuses, except with "quick" (then it runs on the CPU, to check the script).
"""
import json
import math
import os
import sys
import time


def set_tf32(torch, on):
    """TF32 for cuBLAS float32 products on or off; returns the API used. torch >= 2.9 has
    fp32_precision and raises on a mix of it with the legacy allow_tf32, so only one is touched."""
    m = torch.backends.cuda.matmul
    if hasattr(m, "fp32_precision"):
        m.fp32_precision = "tf32" if on else "ieee"
        return f"torch.backends.cuda.matmul.fp32_precision = {m.fp32_precision!r}"
    m.allow_tf32 = on
    return f"torch.backends.cuda.matmul.allow_tf32 = {on}"


def sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_matmul(torch, device, n, timing):
    g = torch.Generator(device=device).manual_seed(1)
    a = torch.randn(n, n, device=device, generator=g)
    b = torch.randn(n, n, device=device, generator=g)
    out = torch.empty(n, n, device=device)
    mm = lambda: torch.mm(a, b, out=out)
    for _ in range(timing["warmup"]):
        mm()
    sync(torch, device)
    t = time.perf_counter()
    mm()
    sync(torch, device)
    single = max(time.perf_counter() - t, 1e-6)
    reps = max(3, min(1000, math.ceil(timing["min_sample_ms"] / 1e3 / single)))
    samples = []
    for _ in range(timing["samples"]):
        t = time.perf_counter()
        for _ in range(reps):
            mm()
        sync(torch, device)
        samples.append((time.perf_counter() - t) / reps)
    flops = 2.0 * n * n * n
    best = min(samples)
    med = sorted(samples)[(len(samples) - 1) // 2]
    # Error against a float64 product of a few rows, relative to sum |a·b| (as attn's spot check).
    rows = torch.arange(0, n, max(1, n // 8), device=device)
    ref = a[rows].double() @ b.double()
    mag = a[rows].double().abs() @ b.double().abs()
    err = ((out[rows].double() - ref).abs() / mag.clamp_min(1e-30)).max().item()
    return {"n": n, "tflops_best": flops / best / 1e12, "tflops_median": flops / med / 1e12,
            "ms_best": best * 1e3, "reps": reps, "samples_ms": [s * 1e3 for s in samples], "max_rel_err": err}


def build(torch, cfg):
    nn = torch.nn
    F = torch.nn.functional
    C, H, L, V, Tmax = cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["vocab_size"], cfg["block_size"]
    bias = bool(cfg.get("bias", False))
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    p_drop = float(cfg.get("dropout", 0.0))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(C, eps=eps, bias=bias)
            self.c_attn = nn.Linear(C, 3 * C, bias=bias)
            self.attn_proj = nn.Linear(C, C, bias=bias)
            self.ln_2 = nn.LayerNorm(C, eps=eps, bias=bias)
            self.c_fc = nn.Linear(C, 4 * C, bias=bias)
            self.mlp_proj = nn.Linear(4 * C, C, bias=bias)
            self.drop = nn.Dropout(p_drop)

        def attention(self, x):
            B, T, _ = x.shape
            q, k, v = self.c_attn(x).split(C, dim=2)
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p_drop if self.training else 0.0, is_causal=True)
            return self.drop(self.attn_proj(y.transpose(1, 2).contiguous().view(B, T, C)))

        def forward(self, x):
            x = x + self.attention(self.ln_1(x))
            return x + self.drop(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(V, C)
            self.wpe = nn.Embedding(Tmax, C)
            self.drop = nn.Dropout(p_drop)
            self.h = nn.ModuleList([Block() for _ in range(L)])
            self.ln_f = nn.LayerNorm(C, eps=eps, bias=bias)
            for name, p in self.named_parameters():  # GPT-2 init
                if name.endswith("proj.weight"):
                    nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * L))
                elif p.dim() >= 2:
                    nn.init.normal_(p, 0.0, 0.02)
                elif name.endswith("bias") and "ln_" not in name:
                    nn.init.zeros_(p)

        def forward(self, idx, targets):
            T = idx.shape[1]
            x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))
            for b in self.h:
                x = b(x)
            logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
            return F.cross_entropy(logits.view(-1, V), targets.view(-1))

    return GPT()


def shakespeare_ids(torch, device, vocab):
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", "data", "tinyshakespeare", "input.txt")
    try:
        with open(path, encoding="utf8") as f:
            text = f.read()
        chars = sorted(set(text))
        if len(chars) == vocab:
            index = {c: i for i, c in enumerate(chars)}
            return torch.tensor([index[c] for c in text], dtype=torch.long, device=device)
    except OSError:
        pass
    g = torch.Generator().manual_seed(7)  # no corpus: random tokens of the same vocabulary
    return torch.randint(0, vocab, (1_000_000,), generator=g).to(device)


def bench_train(torch, device, spec):
    cfg = spec["cfg"]
    B, T = spec["batch"], cfg["block_size"]
    torch.manual_seed(1337)
    model = build(torch, cfg).to(device)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    fused = device.type == "cuda"
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": spec.get("weight_decay", 0.1)},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=spec.get("lr", 1e-3), betas=(0.9, spec.get("beta2", 0.99)), fused=fused)
    ids = shakespeare_ids(torch, device, cfg["vocab_size"])
    g = torch.Generator(device=device).manual_seed(12345)
    clip = spec.get("grad_clip", 1.0)

    def step():
        ix = torch.randint(0, len(ids) - T - 1, (B,), device=device, generator=g)
        offs = ix[:, None] + torch.arange(T, device=device)[None, :]
        x, y = ids[offs], ids[offs + 1]
        loss = model(x, y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optim.step()
        return loss.item()  # a read per step, as attn's trainer does

    for _ in range(spec.get("warmup_steps", 5)):
        step()
    sync(torch, device)
    times = []
    t0 = time.perf_counter()
    last = float("nan")
    while len(times) < spec.get("min_steps", 20) or time.perf_counter() - t0 < spec.get("min_s", 10):
        ts = time.perf_counter()
        last = step()
        times.append(time.perf_counter() - ts)
    sync(torch, device)
    elapsed = time.perf_counter() - t0
    res = {"steps": len(times), "elapsed_s": elapsed, "tokens_per_s": len(times) * B * T / elapsed,
           "best_step_ms": min(times) * 1e3, "median_step_ms": sorted(times)[(len(times) - 1) // 2] * 1e3,
           "params": sum(p.numel() for p in model.parameters()), "last_loss": last}
    if device.type == "cuda":
        res["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
    del model, optim
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def main():
    spec = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())
    try:
        import torch
    except ImportError as e:
        print(json.dumps({"error": f"no PyTorch ({e})"}))
        return
    if torch.cuda.is_available():
        device = torch.device("cuda")
        name = torch.cuda.get_device_name(0)
    elif spec.get("quick"):
        device = torch.device("cpu")
        name = "cpu (no CUDA; --quick check only)"
    else:
        print(json.dumps({"error": f"PyTorch {torch.__version__} sees no CUDA device"}))
        return
    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device.type, "device_name": name}
    parts = spec.get("parts", ["matmul", "train"])
    timing = spec.get("matmul_timing", {"warmup": 5, "samples": 5, "min_sample_ms": 1000})
    for part in parts:
        out[part] = {}
        for label, on in (("tf32_off", False), ("tf32_on", True)):
            print(f"torch {part} {label}…", file=sys.stderr, flush=True)
            try:
                out.setdefault("tf32_api", {})[label] = set_tf32(torch, on)
                if part == "matmul":
                    out[part][label] = bench_matmul(torch, device, spec.get("matmul_n", 4096), timing)
                elif part == "train":
                    out[part][label] = bench_train(torch, device, spec)
            except Exception as e:  # report the failure in the table rather than losing the rest
                out[part][label] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
