#!/usr/bin/env python3
"""Independent PyTorch float64 reference for attn's T5 (Raffel et al. 2020, "Exploring the
Limits of Transfer Learning with a Unified Text-to-Text Transformer") in the Hugging Face
T5ForConditionalGeneration layout, written from the paper and the Hugging Face model
documentation -- there is no `transformers` package on this machine.

It writes two tiny random-weight checkpoints (config.json + model.safetensors):
  t5-v1_0-tied-relu    T5 v1.0: ReLU feed-forward (wi, wo), lm_head tied to `shared` with the
                       decoder output scaled by d_model^-0.5; float32; the file also holds the
                       encoder/decoder embed_tokens copies of `shared` (as older files do);
  t5-v1_1-gated-gelu   T5 v1.1: gated-GELU feed-forward (wi_0, wi_1, wo), separate lm_head,
                       no rescale; bfloat16 on disk; no embed_tokens copies;
and expected.json for each with:
  src_ids / src_mask   two source rows, the second right-padded with pad_token_id 0;
  labels               two target rows, the second's tail ignored (-100);
  decoder_input_ids    labels shifted right, decoder_start_token_id first, -100 -> pad;
  log_softmax          log-softmax of every decoder position, (2, T, V) flattened, 7 digits;
  loss                 mean cross-entropy over the labels that are not -100;
  greedy               8 greedy tokens per (unpadded) source row, stopping after eos,
                       computed by re-running the whole decoder every step (no cache).

The reference runs each row on its own, *unpadded*: padding masks in attn must reproduce the
result of simply leaving the padding out.

Usage: /usr/bin/python3 tools/t5_reference.py [out_dir]   (default test/fixtures/hf-t5)
(T5_SEED, default 4, and T5_OUT_GAIN, default 2, were picked so that greedy decoding is not
degenerate and its top-2 margins stay above 1e-2; the defaults reproduce the fixtures byte for
byte.) Run once; the fixtures are committed and never regenerated in CI.
"""
import json
import math
import os
import sys

import torch

from torch_safetensors import write_safetensors

OUT = sys.argv[1] if len(sys.argv) > 1 else 'test/fixtures/hf-t5'
V = 48
S_LEN, S2_LEN = 20, 13  # source rows: 20 tokens, and 13 tokens padded to 20
T_LEN, T2_LEN = 20, 14  # label rows: 20 tokens, and 14 tokens then -100
GREEDY = 8
# Output projections (o, wo) drawn larger than 1/sqrt(fan_in): the residual stream is then not
# dominated by the input embedding, and greedy decoding does not just repeat its last token.
OUT_GAIN = float(os.environ.get('T5_OUT_GAIN', '2'))

# ------------------------------------------------------------------ relative position buckets


def bucket(query_pos, key_pos, bidirectional, num_buckets, max_distance):
    """The T5 bucket of one (query, key) pair, one pair at a time in plain Python.

    The relative position is key - query. Bidirectional (encoder): half the buckets for keys
    after the query, half for keys at or before it. Causal (decoder): only distances into the
    past count (a key after the query falls in bucket 0; the mask removes it anyway). Within
    a direction, the first half of the buckets are exact distances 0, 1, ...; the rest cover
    distances up to max_distance logarithmically; farther ones share the last bucket.
    """
    rel = key_pos - query_pos
    offset = 0
    n_buckets = num_buckets
    if bidirectional:
        n_buckets //= 2
        if rel > 0:
            offset = n_buckets
        dist = abs(rel)
    else:
        dist = max(-rel, 0)
    exact = n_buckets // 2
    if dist < exact:
        return offset + dist
    b = exact + int(math.log(dist / exact) / math.log(max_distance / exact) * (n_buckets - exact))
    return offset + min(b, n_buckets - 1)


def position_bias(table, q_len, k_len, bidirectional, c):
    """(H, q_len, k_len) bias from the (num_buckets, H) table."""
    H = table.shape[1]
    out = torch.zeros(H, q_len, k_len, dtype=torch.float64)
    for i in range(q_len):
        for j in range(k_len):
            out[:, i, j] = table[bucket(i, j, bidirectional, c['relative_attention_num_buckets'], c['relative_attention_max_distance'])]
    return out

# ------------------------------------------------------------------ the model


def rms(x, w, eps):
    # T5's layer norm: scale only, no mean subtraction, no bias.
    var = (x * x).mean(-1, keepdim=True)
    return w * (x / torch.sqrt(var + eps))


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def attention(W, p, xq, xkv, bias, c):
    """Multi-head attention, no 1/sqrt(d) scaling; bias (H, Tq, Tk) already holds any mask."""
    H, D = c['num_heads'], c['d_kv']
    Tq, Tk = xq.shape[0], xkv.shape[0]
    q = (xq @ W[p + 'q.weight'].T).reshape(Tq, H, D).permute(1, 0, 2)
    k = (xkv @ W[p + 'k.weight'].T).reshape(Tk, H, D).permute(1, 0, 2)
    v = (xkv @ W[p + 'v.weight'].T).reshape(Tk, H, D).permute(1, 0, 2)
    scores = torch.einsum('hqd,hkd->hqk', q, k) + bias
    probs = torch.softmax(scores, -1)
    ctx = torch.einsum('hqk,hkd->hqd', probs, v).permute(1, 0, 2).reshape(Tq, H * D)
    return ctx @ W[p + 'o.weight'].T


def ffn(W, p, x, c):
    if c['feed_forward_proj'] == 'relu':
        return torch.relu(x @ W[p + 'wi.weight'].T) @ W[p + 'wo.weight'].T
    return (gelu_new(x @ W[p + 'wi_0.weight'].T) * (x @ W[p + 'wi_1.weight'].T)) @ W[p + 'wo.weight'].T


def encode(W, c, src):
    eps = c['layer_norm_epsilon']
    x = W['shared.weight'][torch.tensor(src)]
    S = len(src)
    bias = position_bias(W['encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight'], S, S, True, c)
    for l in range(c['num_layers']):
        p = f'encoder.block.{l}.'
        h = rms(x, W[p + 'layer.0.layer_norm.weight'], eps)
        x = x + attention(W, p + 'layer.0.SelfAttention.', h, h, bias, c)
        x = x + ffn(W, p + 'layer.1.DenseReluDense.', rms(x, W[p + 'layer.1.layer_norm.weight'], eps), c)
    return rms(x, W['encoder.final_layer_norm.weight'], eps)


def decode(W, c, memory, dec_ids):
    """Log-softmax (T, V) of every position of dec_ids given the encoder output memory (S, C)."""
    eps = c['layer_norm_epsilon']
    T = len(dec_ids)
    x = W['shared.weight'][torch.tensor(dec_ids)]
    bias = position_bias(W['decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight'], T, T, False, c)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    bias = bias.masked_fill(future, float('-inf'))
    no_bias = torch.zeros(c['num_heads'], T, memory.shape[0], dtype=torch.float64)
    for l in range(c['num_decoder_layers']):
        p = f'decoder.block.{l}.'
        h = rms(x, W[p + 'layer.0.layer_norm.weight'], eps)
        x = x + attention(W, p + 'layer.0.SelfAttention.', h, h, bias, c)
        h = rms(x, W[p + 'layer.1.layer_norm.weight'], eps)
        x = x + attention(W, p + 'layer.1.EncDecAttention.', h, memory, no_bias, c)
        x = x + ffn(W, p + 'layer.2.DenseReluDense.', rms(x, W[p + 'layer.2.layer_norm.weight'], eps), c)
    x = rms(x, W['decoder.final_layer_norm.weight'], eps)
    if c['tie_word_embeddings']:
        logits = (x * c['d_model'] ** -0.5) @ W['shared.weight'].T
    else:
        logits = x @ W['lm_head.weight'].T
    return torch.log_softmax(logits, -1)

# ------------------------------------------------------------------ weights and cases


def make_weights(c, gen):
    C, H, D, F = c['d_model'], c['num_heads'], c['d_kv'], c['d_ff']
    w = {}

    def mat(name, o, i, gain=1.0):
        w[name] = gain * torch.randn(o, i, generator=gen) / math.sqrt(i)

    def norm(name):
        w[name] = 1 + 0.2 * torch.randn(C, generator=gen)

    w['shared.weight'] = torch.randn(V, C, generator=gen)
    for stack, n_layers in (('encoder', c['num_layers']), ('decoder', c['num_decoder_layers'])):
        for l in range(n_layers):
            p = f'{stack}.block.{l}.layer.'
            attns = ['0.SelfAttention'] if stack == 'encoder' else ['0.SelfAttention', '1.EncDecAttention']
            for a in attns:
                for m in 'qkv':
                    mat(f'{p}{a}.{m}.weight', H * D, C)
                mat(f'{p}{a}.o.weight', C, H * D, OUT_GAIN)
            if l == 0:
                w[f'{p}0.SelfAttention.relative_attention_bias.weight'] = 0.7 * torch.randn(c['relative_attention_num_buckets'], H, generator=gen)
            ff = len(attns)
            if c['feed_forward_proj'] == 'relu':
                mat(f'{p}{ff}.DenseReluDense.wi.weight', F, C)
            else:
                mat(f'{p}{ff}.DenseReluDense.wi_0.weight', F, C)
                mat(f'{p}{ff}.DenseReluDense.wi_1.weight', F, C)
            mat(f'{p}{ff}.DenseReluDense.wo.weight', C, F, OUT_GAIN)
            for k in range(ff + 1):
                norm(f'{p}{k}.layer_norm.weight')
        norm(f'{stack}.final_layer_norm.weight')
    if not c['tie_word_embeddings']:
        mat('lm_head.weight', V, C)
    return w


def hf_config(name, extra):
    cfg = {
        'architectures': ['T5ForConditionalGeneration'], 'model_type': 't5', 'is_encoder_decoder': True,
        'vocab_size': V, 'd_model': 16, 'd_kv': 4, 'd_ff': 32, 'num_layers': 2, 'num_heads': 4,
        'relative_attention_num_buckets': 8, 'relative_attention_max_distance': 16,
        'dropout_rate': 0.1, 'layer_norm_epsilon': 1e-6, 'initializer_factor': 1.0,
        'pad_token_id': 0, 'eos_token_id': 1, 'decoder_start_token_id': 0, 'use_cache': True,
    }
    cfg.update(extra)
    return cfg


CASES = {
    # v1.0: feed_forward_proj relu, tie_word_embeddings and num_decoder_layers left to their defaults.
    't5-v1_0-tied-relu': (hf_config('v1.0', {'feed_forward_proj': 'relu', 'torch_dtype': 'float32'}), torch.float32, True),
    't5-v1_1-gated-gelu': (hf_config('v1.1', {'feed_forward_proj': 'gated-gelu', 'tie_word_embeddings': False, 'num_decoder_layers': 2,
                                               'torch_dtype': 'bfloat16'}), torch.bfloat16, False),
}


def normalised(cfg):
    c = dict(cfg)
    c.setdefault('num_decoder_layers', c['num_layers'])
    c.setdefault('tie_word_embeddings', True)
    return c


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(int(os.environ.get('T5_SEED', '4')))
    for name, (cfg, store, embed_copies) in CASES.items():
        c = normalised(cfg)
        w = {k: v.to(store) for k, v in make_weights(c, gen).items()}
        W = {k: v.double() for k, v in w.items()}  # the reference uses exactly the stored values
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, 'config.json'), 'w') as f:
            json.dump(cfg, f, indent=2)
        on_disk = dict(w)
        if embed_copies:
            on_disk['encoder.embed_tokens.weight'] = w['shared.weight'].clone()
            on_disk['decoder.embed_tokens.weight'] = w['shared.weight'].clone()
        write_safetensors(os.path.join(d, 'model.safetensors'), on_disk)

        pad, start, eos = c['pad_token_id'], c['decoder_start_token_id'], c['eos_token_id']
        rnd = lambda n: torch.randint(2, V, (n,), generator=gen).tolist()  # no pad / eos inside
        src = [rnd(S_LEN), rnd(S2_LEN)]
        labels = [rnd(T_LEN - 1) + [eos], rnd(T2_LEN - 1) + [eos] + [-100] * (T_LEN - T2_LEN)]
        dec_in = [[start] + [pad if t == -100 else t for t in row[:-1]] for row in labels]

        lps, nll, count, greedy, margin = [], 0.0, 0, [], float('inf')
        for b in range(2):
            memory = encode(W, c, src[b])
            lp = decode(W, c, memory, dec_in[b])
            lps.append(lp)
            for t, y in enumerate(labels[b]):
                if y != -100:
                    nll -= float(lp[t, y])
                    count += 1
            out = [start]
            for _ in range(GREEDY):
                last = decode(W, c, memory, out)[-1]
                top = torch.topk(last, 2).values
                margin = min(margin, float(top[0] - top[1]))
                nxt = int(last.argmax())
                out.append(nxt)
                if nxt == eos:
                    break
            greedy.append(out[1:])
        pad_to = lambda row, n, v: row + [v] * (n - len(row))
        expected = {
            'vocab_size': V,
            'src_ids': [pad_to(r, S_LEN, pad) for r in src],
            'src_mask': [pad_to([1] * len(r), S_LEN, 0) for r in src],
            'labels': labels,
            'decoder_input_ids': dec_in,
            'log_softmax': [round(x, 7) for x in torch.stack(lps).flatten().tolist()],
            'loss': round(nll / count, 9),
            'greedy': {'max_new_tokens': GREEDY, 'eos_token_id': eos, 'tokens': greedy},
        }
        with open(os.path.join(d, 'expected.json'), 'w') as f:
            json.dump(expected, f)
        print(f'{name}: loss {nll / count:.6f}, greedy {greedy}, smallest top-2 logprob margin {margin:.2e}')


if __name__ == '__main__':
    main()
