"""attn's `shakespeare-char-tiny` preset (src/train/presets.ts) in plain PyTorch, as a peer
for loss and wall time.

Char-level Tiny Shakespeare (data/tinyshakespeare/input.txt), first 90 % train, last 10 % val;
GPT with 4 layers, 4 heads, 128 wide, context 64, pre-LN, GELU (tanh), no biases, tied head,
dropout 0; batch 12; AdamW lr 2e-3, betas (0.9, 0.99), eps 1e-8, weight decay 0.1 on tensors
with >= 2 dims; warmup 100 then cosine to 2e-4 at iteration 2000 (the schedule of
src/train/schedule.ts); global grad-norm clip 1.0; 2000 updates. As src/train/trainer.ts does,
both splits are evaluated on 20 random batches at iterations 0, 250, ... and after the last update.

  /usr/bin/python3 tools/torch_train_shakespeare_tiny.py [--max_iters N] [--threads 1]
      [--blas_threads 2] [--seed 1337] [--data PATH] [--keep-openblas-env]

Prints one JSON line per evaluation {iter, train_loss, val_loss, elapsed_s} and a final
{final_val_loss, wall_s, ...}. elapsed_s and wall_s include the evaluations.
"""
import argparse
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The preset's values (src/train/presets.ts: SHAKESPEARE_CHAR_TINY over SHAKESPEARE_CHAR).
CFG = dict(
    n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, dropout=0.0, bias=False,
    learning_rate=2e-3, min_lr=2e-4, warmup_iters=100, lr_decay_iters=2000, max_iters=2000,
    beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, grad_clip=1.0,
    eval_interval=250, eval_iters=20, val_fraction=0.1, seed=1337,
)


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max_iters", type=int, default=CFG["max_iters"], help="updates (the schedule stays the preset's)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--blas_threads", type=int, default=2, help="OPENBLAS_NUM_THREADS when not set (default 2)")
    ap.add_argument("--seed", type=int, default=CFG["seed"])
    ap.add_argument("--learning_rate", type=float, default=CFG["learning_rate"], help="peak rate; min_lr is a tenth of it")
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "tinyshakespeare", "input.txt"))
    ap.add_argument("--keep-openblas-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (unset by default, as bench/gpt.ts does)")
    return ap.parse_args()


def lr_at(it):
    """Linear warmup, cosine down to min_lr at lr_decay_iters, then min_lr (src/train/schedule.ts)."""
    c = CFG
    if it < c["warmup_iters"]:
        return c["learning_rate"] * (it + 1) / (c["warmup_iters"] + 1)
    if it > c["lr_decay_iters"]:
        return c["min_lr"]
    ratio = (it - c["warmup_iters"]) / (c["lr_decay_iters"] - c["warmup_iters"])
    return c["min_lr"] + 0.5 * (1 + math.cos(math.pi * ratio)) * (c["learning_rate"] - c["min_lr"])


def main():
    args = parse()
    # OpenBLAS reads its environment when torch loads it.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.blas_threads))
    dropped = []
    if not args.keep_openblas_env:
        for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            if k in os.environ:
                dropped.append(f"{k}={os.environ.pop(k)}")
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError as e:
        sys.exit(f"PyTorch is not importable ({e}); install: apt-get install python3-torch libopenblas0-pthread, "
                 f"and run with /usr/bin/python3")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    CFG["learning_rate"], CFG["min_lr"] = args.learning_rate, args.learning_rate / 10

    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = torch.tensor([stoi[ch] for ch in text], dtype=torch.long)
    n_train = int(len(ids) * (1 - CFG["val_fraction"]))
    splits = {"train": ids[:n_train], "val": ids[n_train:]}
    V, B, T = len(chars), CFG["batch_size"], CFG["block_size"]
    C, H, L = CFG["n_embd"], CFG["n_head"], CFG["n_layer"]
    gens = {"train": torch.Generator().manual_seed(args.seed + 1),
            "eval_train": torch.Generator().manual_seed(args.seed + 2),
            "eval_val": torch.Generator().manual_seed(args.seed + 3)}

    def batch(split, gen):
        data = splits[split]
        ix = torch.randint(len(data) - T, (B,), generator=gen)
        x = torch.stack([data[i:i + T] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + T] for i in ix])
        return x, y

    class LayerNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(C))

        def forward(self, x):
            return F.layer_norm(x, (C,), self.weight, None, 1e-5)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = LayerNorm()
            self.c_attn = nn.Linear(C, 3 * C, bias=False)
            self.attn_proj = nn.Linear(C, C, bias=False)
            self.ln_2 = LayerNorm()
            self.c_fc = nn.Linear(C, 4 * C, bias=False)
            self.mlp_proj = nn.Linear(4 * C, C, bias=False)
            self.register_buffer("mask", torch.tril(torch.ones(T, T, dtype=torch.bool)), persistent=False)

        def forward(self, x):
            Bx, Tx, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(Bx, Tx, H, C // H).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
            att = att.masked_fill(~self.mask[:Tx, :Tx], float("-inf")).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).contiguous().view(Bx, Tx, C)
            x = x + self.attn_proj(y)
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(V, C)
            self.wpe = nn.Embedding(T, C)
            self.h = nn.ModuleList([Block() for _ in range(L)])
            self.ln_f = LayerNorm()
            for name, p in self.named_parameters():  # GPT-2 init, residual projections scaled
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * L) if name.endswith("proj.weight") else 0.02
                    nn.init.normal_(p, 0.0, std)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for b in self.h:
                x = b(x)
            logits = F.linear(self.ln_f(x), self.wte.weight)  # tied head
            return F.cross_entropy(logits.view(-1, V), targets.view(-1))

    model = GPT()
    params = list(model.parameters())
    opt = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": CFG["weight_decay"]},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=CFG["learning_rate"], betas=(CFG["beta1"], CFG["beta2"]), eps=CFG["eps"])

    @torch.no_grad()
    def estimate(split, gen):
        model.eval()
        total = sum(model(*batch(split, gen)).item() for _ in range(CFG["eval_iters"]))
        model.train()
        return total / CFG["eval_iters"]

    print(json.dumps({"config": {**CFG, "max_iters": args.max_iters}, "vocab_size": V, "params": sum(p.numel() for p in params),
                      "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                      "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "openblas_env_unset": dropped}), flush=True)
    t0 = time.perf_counter()
    train_s = 0.0
    val = float("nan")
    for it in range(args.max_iters + 1):
        if it % CFG["eval_interval"] == 0 or it == args.max_iters:
            tl = estimate("train", gens["eval_train"])
            val = estimate("val", gens["eval_val"])
            print(json.dumps({"iter": it, "train_loss": tl, "val_loss": val, "elapsed_s": time.perf_counter() - t0}), flush=True)
        if it == args.max_iters:
            break
        ts = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        loss = model(*batch("train", gens["train"]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CFG["grad_clip"])
        opt.step()
        train_s += time.perf_counter() - ts
    wall = time.perf_counter() - t0
    print(json.dumps({"final_val_loss": val, "wall_s": wall, "train_s": train_s,
                      "train_tokens_per_s": args.max_iters * B * T / train_s if train_s else None}), flush=True)


if __name__ == "__main__":
    main()
