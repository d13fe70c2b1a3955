#!/usr/bin/python3
"""Makes test/fixtures/gpt2-tiny: a random-weight GPT-2 in Hugging Face's layout, and the
log-probabilities Hugging Face's GPT2LMHeadModel computes for it, as attn's parity reference.

Runs with only PyTorch (Debian's python3-torch): the GPT-2 forward pass is written out below
exactly as transformers' modeling_gpt2.py computes it (pre-LayerNorm, Conv1D x @ W + b with
W stored [in, out], causal softmax attention scaled by 1/sqrt(head_dim), tanh GELU "gelu_new",
final ln_f, lm_head tied to wte), and safetensors is written by hand with struct + json.

Weights are stored in float32; the reference forward runs in float64 on those float32 values,
so the expected numbers carry no float32 rounding of their own.

    /usr/bin/python3 tools/make_gpt2_fixture.py
"""
import json
import math
import os
import struct

import torch

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "gpt2-tiny"))

# Small enough to commit (~130 KB of weights), big enough to have several heads and layers.
CONFIG = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "embd_pdrop": 0.1,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 32,
    "n_embd": 32,
    "n_head": 4,
    "n_inner": None,
    "n_layer": 2,
    "n_positions": 32,
    "resid_pdrop": 0.1,
    "scale_attn_weights": True,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
    "vocab_size": 100,
}

SEED = 20240601


def make_weights():
    """HF GPT2LMHeadModel state dict (float32), Conv1D weights [in, out]. The scales are larger
    than GPT-2's 0.02 init, and biases and LayerNorm parameters are non-trivial, so that the
    logits spread out and any layout or formula mistake changes the log-probs visibly."""
    g = torch.Generator().manual_seed(SEED)
    C, L, P, V = CONFIG["n_embd"], CONFIG["n_layer"], CONFIG["n_positions"], CONFIG["vocab_size"]

    def normal(*shape, std):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * std).float()

    w = {}
    w["transformer.wte.weight"] = normal(V, C, std=0.5)
    w["transformer.wpe.weight"] = normal(P, C, std=0.2)
    for i in range(L):
        p = f"transformer.h.{i}."
        w[p + "ln_1.weight"] = 1 + normal(C, std=0.2)
        w[p + "ln_1.bias"] = normal(C, std=0.1)
        # The causal-mask buffer HF checkpoints of GPT-2 carry (float 1/0 lower triangle).
        w[p + "attn.bias"] = torch.tril(torch.ones(P, P)).view(1, 1, P, P)
        w[p + "attn.c_attn.weight"] = normal(C, 3 * C, std=0.25)
        w[p + "attn.c_attn.bias"] = normal(3 * C, std=0.1)
        w[p + "attn.c_proj.weight"] = normal(C, C, std=0.15)
        w[p + "attn.c_proj.bias"] = normal(C, std=0.05)
        w[p + "ln_2.weight"] = 1 + normal(C, std=0.2)
        w[p + "ln_2.bias"] = normal(C, std=0.1)
        w[p + "mlp.c_fc.weight"] = normal(C, 4 * C, std=0.25)
        w[p + "mlp.c_fc.bias"] = normal(4 * C, std=0.1)
        w[p + "mlp.c_proj.weight"] = normal(4 * C, C, std=0.1)
        w[p + "mlp.c_proj.bias"] = normal(C, std=0.05)
    w["transformer.ln_f.weight"] = 1 + normal(C, std=0.2)
    w["transformer.ln_f.bias"] = normal(C, std=0.1)
    return w


def gelu_new(x):
    # HF's NewGELUActivation (the tanh approximation used by GPT-2).
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gpt2_logits(w, ids):
    """GPT2LMHeadModel.forward(ids).logits for one sequence, in float64."""
    w = {k: v.double() for k, v in w.items()}
    C, H, L = CONFIG["n_embd"], CONFIG["n_head"], CONFIG["n_layer"]
    eps = CONFIG["layer_norm_epsilon"]
    D = C // H
    T = len(ids)
    ids = torch.tensor(ids, dtype=torch.long)
    x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][torch.arange(T)]  # (T, C)

    def ln(x, name):
        return torch.nn.functional.layer_norm(x, (C,), w[name + ".weight"], w[name + ".bias"], eps)

    def conv1d(x, name):  # HF Conv1D: x @ W + b, W is [in, out]
        return x @ w[name + ".weight"] + w[name + ".bias"]

    for i in range(L):
        p = f"transformer.h.{i}."
        a = ln(x, p + "ln_1")
        q, k, v = conv1d(a, p + "attn.c_attn").split(C, dim=-1)
        q, k, v = (t.view(T, H, D).transpose(0, 1) for t in (q, k, v))  # (H, T, D)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D)  # (H, T, T)
        causal = w[p + "attn.bias"][0, 0, :T, :T].bool()
        att = torch.where(causal, att, torch.tensor(torch.finfo(att.dtype).min, dtype=att.dtype))
        att = torch.softmax(att, dim=-1)
        y = (att @ v).transpose(0, 1).reshape(T, C)  # merge heads
        x = x + conv1d(y, p + "attn.c_proj")
        m = gelu_new(conv1d(ln(x, p + "ln_2"), p + "mlp.c_fc"))
        x = x + conv1d(m, p + "mlp.c_proj")
    x = ln(x, "transformer.ln_f")
    return x @ w["transformer.wte.weight"].T  # tied lm_head, (T, V)


def write_safetensors(path, tensors, metadata):
    """safetensors: u64-LE header length, JSON header padded with spaces to 8 bytes, data."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        assert t.dtype == torch.float32
        raw = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    torch.manual_seed(SEED)
    os.makedirs(OUT, exist_ok=True)
    w = make_weights()
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(OUT, "model.safetensors"), w, {"format": "pt"})

    g = torch.Generator().manual_seed(SEED + 1)
    V, P = CONFIG["vocab_size"], CONFIG["n_positions"]
    lengths = [P, 17, 5]  # a full block, a middle length, a short one
    sequences = []
    for T in lengths:
        ids = torch.randint(0, V, (T,), generator=g).tolist()
        logp = torch.log_softmax(gpt2_logits(w, ids), dim=-1)  # (T, V)
        # log p(ids[t+1] | ids[:t+1]) for every next token
        nxt = [logp[t, ids[t + 1]].item() for t in range(T - 1)]
        sequences.append({"tokens": ids, "next_token_logprobs": nxt})
    short = sequences[2]["tokens"]
    expected = {
        "about": "log-probabilities (natural log, float64) of each next token under GPT2LMHeadModel, "
                 "and the full logits of the short sequence; made by tools/make_gpt2_fixture.py",
        "sequences": sequences,
        "logits": {"tokens": short, "values": gpt2_logits(w, short).tolist()},
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
