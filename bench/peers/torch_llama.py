"""PyTorch CPU peer for bench/llama.ts: a Llama-architecture decoder in plain torch (RMSNorm,
SwiGLU MLP, rotary embedding in the half-split convention, grouped-query attention), timed like
attn's DecoderLM.

Input: one JSON object on stdin:
  {"threads": 2, "section": "train", "cfg": {...}, "batch": 8, "min_s": 10, "warmup_steps": 2}
  {"threads": 2, "section": "infer", "cfg": {...}, "prefill_tokens": 128, "decode_tokens": 32, "min_s": 10}
cfg: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
vocab_size, max_position_embeddings, tie_word_embeddings, rope_theta.
Output: one JSON object on stdout. Attention is written out (torch 1.13 has no
scaled_dot_product_attention).
"""
import json
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, n, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        C, I, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
        self.H, self.Hkv = c["num_attention_heads"], c["num_key_value_heads"]
        self.D = C // self.H
        self.embed = nn.Embedding(c["vocab_size"], C)
        self.layers = nn.ModuleList()
        for _ in range(L):
            m = nn.Module()
            m.ln1, m.ln2 = RMSNorm(C), RMSNorm(C)
            m.q = nn.Linear(C, self.H * self.D, bias=False)
            m.k = nn.Linear(C, self.Hkv * self.D, bias=False)
            m.v = nn.Linear(C, self.Hkv * self.D, bias=False)
            m.o = nn.Linear(self.H * self.D, C, bias=False)
            m.gate = nn.Linear(C, I, bias=False)
            m.up = nn.Linear(C, I, bias=False)
            m.down = nn.Linear(I, C, bias=False)
            self.layers.append(m)
        self.norm = RMSNorm(C)
        self.head = None if c.get("tie_word_embeddings") else nn.Linear(C, c["vocab_size"], bias=False)
        P = c["max_position_embeddings"]
        inv = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, self.D, 2).float() / self.D))
        ang = torch.arange(P).float()[:, None] * inv[None, :]
        self.register_buffer("cos", torch.cat([ang.cos()] * 2, -1), persistent=False)
        self.register_buffer("sin", torch.cat([ang.sin()] * 2, -1), persistent=False)

    def rope(self, x, p0):
        T = x.shape[2]
        cos, sin = self.cos[p0:p0 + T], self.sin[p0:p0 + T]
        x1, x2 = x[..., : self.D // 2], x[..., self.D // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def forward(self, idx, targets=None, cache=None, p0=0):
        B, T = idx.shape
        x = self.embed(idx)
        g = self.H // self.Hkv
        for i, m in enumerate(self.layers):
            h = m.ln1(x)
            q = self.rope(m.q(h).view(B, T, self.H, self.D).transpose(1, 2), p0)
            k = self.rope(m.k(h).view(B, T, self.Hkv, self.D).transpose(1, 2), p0)
            v = m.v(h).view(B, T, self.Hkv, self.D).transpose(1, 2)
            if cache is not None:
                kc, vc = cache[i]
                kc[:, :, p0:p0 + T] = k
                vc[:, :, p0:p0 + T] = v
                k, v = kc[:, :, : p0 + T], vc[:, :, : p0 + T]
            k = k.repeat_interleave(g, 1)
            v = v.repeat_interleave(g, 1)
            s = q @ k.transpose(-1, -2) / math.sqrt(self.D)
            if T > 1:
                Tk = k.shape[2]
                mask = torch.ones(T, Tk, dtype=torch.bool).tril(Tk - T)
                s = s.masked_fill(~mask, float("-inf"))
            y = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, self.H * self.D)
            x = x + m.o(y)
            h = m.ln2(x)
            x = x + m.down(F.silu(m.gate(h)) * m.up(h))
        x = self.norm(x)
        logits = x @ self.embed.weight.T if self.head is None else self.head(x)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def main():
    spec = json.loads(sys.stdin.read())
    torch.set_num_threads(spec.get("threads", 2))
    torch.manual_seed(0)
    c = spec["cfg"]
    model = Llama(c)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters())}
    V = c["vocab_size"]
    if spec["section"] == "train":
        B, T = spec["batch"], c["max_position_embeddings"]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        def step():
            x = torch.randint(0, V, (B, T))
            y = torch.randint(0, V, (B, T))
            _, loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for _ in range(spec.get("warmup_steps", 2)):
            step()
        t0, n = time.perf_counter(), 0
        while n < 3 or time.perf_counter() - t0 < spec.get("min_s", 10):
            step()
            n += 1
        el = time.perf_counter() - t0
        out.update(steps=n, elapsed_s=el, tokens_per_s=n * B * T / el)
    else:
        model.eval()
        P, N = spec["prefill_tokens"], spec["decode_tokens"]
        prompt = torch.randint(0, V, (1, P))
        with torch.no_grad():
            def prefill():
                logits, _ = model(prompt)
                return logits[0, -1, 0].item()
            prefill()
            t0, n = time.perf_counter(), 0
            while n < 2 or time.perf_counter() - t0 < spec.get("min_s", 10):
                prefill()
                n += 1
            out["prefill"] = {"reps": n, "tokens_per_s": n * P / (time.perf_counter() - t0)}
            Pmax = c["max_position_embeddings"]
            D = model.D

            def decode():
                cache = [(torch.zeros(1, model.Hkv, Pmax, D), torch.zeros(1, model.Hkv, Pmax, D)) for _ in model.layers]
                logits, _ = model(prompt, cache=cache, p0=0)
                tok = logits[:, -1].argmax(-1, keepdim=True)
                t = time.perf_counter()
                for i in range(N):
                    logits, _ = model(tok, cache=cache, p0=P + i)
                    tok = logits[:, -1].argmax(-1, keepdim=True)
                return time.perf_counter() - t
            decode()
            total, reps = 0.0, 0
            while reps < 2 or total < spec.get("min_s", 10):
                total += decode()
                reps += 1
            out["decode"] = {"reps": reps, "tokens_per_s": reps * N / total}
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
