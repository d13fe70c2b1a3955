#!/usr/bin/python3
"""Makes test/fixtures/seq2seq-tiny: a random-weight encoder-decoder Transformer built from
torch.nn.TransformerEncoderLayer / TransformerDecoderLayer (post-norm, ReLU, as in the 2017
paper; no final stack norms), with a shared embedding scaled by sqrt(d_model), sinusoidal
positions and a tied output projection, and the logits and label-smoothed loss it computes, as
attn's EncoderDecoder parity reference.

Runs with only PyTorch (Debian's python3-torch 1.13); safetensors is written by hand with
struct + json. Weights are float32; the reference runs in float64 on those values.

    /usr/bin/python3 tools/make_seq2seq_fixture.py
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "seq2seq-tiny"))

CONFIG = {
    "n_layer_enc": 2, "n_layer_dec": 2, "n_head": 4, "d_model": 16, "d_ff": 32, "dropout": 0.0,
    "max_len": 16, "vocab_size": 20, "pad_id": 0, "bos_id": 1, "eos_id": 2,
    "norm_placement": "post", "activation": "relu", "label_smoothing": 0.1,
}
SEED = 20240917


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.embed = torch.nn.Embedding(c["vocab_size"], d)
        enc = lambda: torch.nn.TransformerEncoderLayer(d, c["n_head"], c["d_ff"], 0.0, "relu", batch_first=True)
        dec = lambda: torch.nn.TransformerDecoderLayer(d, c["n_head"], c["d_ff"], 0.0, "relu", batch_first=True)
        self.encoder = torch.nn.ModuleList([enc() for _ in range(c["n_layer_enc"])])
        self.decoder = torch.nn.ModuleList([dec() for _ in range(c["n_layer_dec"])])
        pe = torch.zeros(c["max_len"], d, dtype=torch.float64)
        for pos in range(c["max_len"]):
            for i in range(0, d, 2):
                a = pos / math.pow(10000, i / d)
                pe[pos, i] = math.sin(a)
                pe[pos, i + 1] = math.cos(a)
        self.register_buffer("pe", pe)
        self.c = c

    def forward(self, src, tgt_in):
        c = self.c
        scale = math.sqrt(c["d_model"])
        src_pad = src == c["pad_id"]
        tgt_pad = tgt_in == c["pad_id"]
        T = tgt_in.shape[1]
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        x = self.embed(src) * scale + self.pe[: src.shape[1]]
        for l in self.encoder:
            x = l(x, src_key_padding_mask=src_pad)
        y = self.embed(tgt_in) * scale + self.pe[:T]
        for l in self.decoder:
            y = l(y, x, tgt_mask=causal, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)
        return y @ self.embed.weight.t()


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    torch.manual_seed(SEED)
    m = Model(CONFIG)
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in m.named_parameters():
            n = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if "norm" in name and name.endswith("weight"):
                v = 1 + 0.2 * n
            elif name == "embed.weight":
                v = 0.4 * n
            elif name.endswith("bias"):
                v = 0.1 * n
            else:
                v = n / math.sqrt(p.shape[-1])
            p.copy_(v.float())
    weights = {k: v.clone() for k, v in m.state_dict().items() if k != "pe"}
    m = m.double()
    m.train()  # dropout is 0; train mode keeps torch off its fused inference path
    src = torch.tensor([[5, 9, 3, 17, 2, 0, 0], [12, 4, 4, 8, 19, 6, 2]])
    tgt_in = torch.tensor([[1, 7, 11, 0, 0], [1, 13, 3, 10, 15]])
    tgt_out = torch.tensor([[7, 11, 2, 0, 0], [13, 3, 10, 15, 2]])
    with torch.no_grad():
        logits = m(src, tgt_in)
        V = CONFIG["vocab_size"]
        loss = F.cross_entropy(logits.reshape(-1, V), tgt_out.reshape(-1), ignore_index=CONFIG["pad_id"], label_smoothing=CONFIG["label_smoothing"])
    os.makedirs(OUT, exist_ok=True)
    save_safetensors(os.path.join(OUT, "model.safetensors"), weights)
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=1)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({
            "torch_version": torch.__version__, "src": src.tolist(), "tgt_in": tgt_in.tolist(), "tgt_out": tgt_out.tolist(),
            "logits_shape": list(logits.shape), "logits": [round(x, 10) for x in logits.reshape(-1).tolist()], "loss": loss.item(),
        }, f)
    print("wrote", OUT, "loss", loss.item())


if __name__ == "__main__":
    main()
