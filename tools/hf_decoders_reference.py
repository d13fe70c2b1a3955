#!/usr/bin/env python3
"""Independent PyTorch reference for attn's Hugging Face decoder families (llama, mistral,
qwen2, qwen3, phi), written from the published architecture descriptions (Llama: Touvron et
al. 2023; Mistral: Jiang et al. 2023; Qwen2/Qwen3 technical reports; Phi-2's model card and
the Hugging Face model documentation) -- there is no `transformers` package on this machine.

For each case it writes a tiny random-weight checkpoint in the Hugging Face layout
(config.json + model.safetensors, or shards + model.safetensors.index.json; float32, bfloat16
or float16 tensors) and expected.json with the log-softmax of every position computed in
float64. The lora case also writes a PEFT adapter directory and the gradients of the mean
next-token loss with respect to every adapter tensor.

Usage: /usr/bin/python3 tools/hf_decoders_reference.py [out_dir]   (default test/fixtures/hf-decoders)
Run once; the fixtures are committed and never regenerated in CI.
"""
import json
import math
import os
import sys

import torch

from torch_safetensors import write_safetensors

torch.manual_seed(0)
OUT = sys.argv[1] if len(sys.argv) > 1 else 'test/fixtures/hf-decoders'
V, T = 64, 20

# ------------------------------------------------------------------ config defaults


def full(cfg):
    """The architecture switches of a config.json, with each family's defaults."""
    fam = cfg['model_type']
    H = cfg['num_attention_heads']
    c = dict(cfg)
    c.setdefault('num_key_value_heads', H)
    c.setdefault('head_dim', cfg['hidden_size'] // H)
    c['phi'] = fam == 'phi'
    c['rotary'] = int(c['head_dim'] * cfg.get('partial_rotary_factor', 1.0))
    bias = cfg.get('attention_bias', False)
    c['qkv_bias'] = True if fam in ('qwen2', 'phi') else bias
    c['o_bias'] = True if fam == 'phi' else (False if fam == 'qwen2' else bias)
    c['mlp_bias'] = True if fam == 'phi' else cfg.get('mlp_bias', False)
    c['qk_norm'] = fam == 'qwen3' or cfg.get('qk_layernorm', False)
    c['eps'] = cfg.get('layer_norm_eps' if fam == 'phi' else 'rms_norm_eps', 1e-5 if fam == 'phi' else 1e-6)
    window = None
    if fam == 'mistral':
        window = cfg.get('sliding_window')
    if fam in ('qwen2', 'qwen3') and cfg.get('use_sliding_window'):
        window = cfg['sliding_window']
    c['window'] = window
    c['window_from'] = cfg.get('max_window_layers', 0) if fam in ('qwen2', 'qwen3') else 0
    return c

# ------------------------------------------------------------------ weights


def make_weights(c, gen):
    C, I, D = c['hidden_size'], c['intermediate_size'], c['head_dim']
    H, Hkv = c['num_attention_heads'], c['num_key_value_heads']
    w = {}

    def mat(name, o, i, bias):
        w[name + '.weight'] = torch.randn(o, i, generator=gen) * (1 / math.sqrt(i))
        if bias:
            w[name + '.bias'] = torch.randn(o, generator=gen) * 0.1

    def norm(name, n):
        w[name + '.weight'] = 1 + 0.2 * torch.randn(n, generator=gen)
        if c['phi']:
            w[name + '.bias'] = 0.1 * torch.randn(n, generator=gen)

    w['model.embed_tokens.weight'] = torch.randn(V, C, generator=gen) * 0.5
    for l in range(c['num_hidden_layers']):
        p = f'model.layers.{l}.'
        norm(p + 'input_layernorm', C)
        if not c['phi']:
            norm(p + 'post_attention_layernorm', C)
        mat(p + 'self_attn.q_proj', H * D, C, c['qkv_bias'])
        mat(p + 'self_attn.k_proj', Hkv * D, C, c['qkv_bias'])
        mat(p + 'self_attn.v_proj', Hkv * D, C, c['qkv_bias'])
        mat(p + ('self_attn.dense' if c['phi'] else 'self_attn.o_proj'), C, H * D, c['o_bias'])
        if c['qk_norm']:
            qn, kn = ('q_layernorm', 'k_layernorm') if c['phi'] else ('q_norm', 'k_norm')
            norm(p + 'self_attn.' + qn, D)
            norm(p + 'self_attn.' + kn, D)
        if c['phi']:
            mat(p + 'mlp.fc1', I, C, True)
            mat(p + 'mlp.fc2', C, I, True)
        else:
            mat(p + 'mlp.gate_proj', I, C, c['mlp_bias'])
            mat(p + 'mlp.up_proj', I, C, c['mlp_bias'])
            mat(p + 'mlp.down_proj', C, I, c['mlp_bias'])
    norm('model.final_layernorm' if c['phi'] else 'model.norm', C)
    if not c.get('tie_word_embeddings', False):
        mat('lm_head', V, C, c['phi'])
    return {k: v.float() for k, v in w.items()}

# ------------------------------------------------------------------ the forward pass


def inv_freq(c, seq_len):
    """RoPE inverse frequencies in float32, as the published scalings define them."""
    dim, base = c['rotary'], float(c.get('rope_theta', 10000.0))
    sc = c.get('rope_scaling') or {}
    kind = sc.get('rope_type', sc.get('type', 'default'))
    maxp = c['max_position_embeddings']
    if kind == 'dynamic' and seq_len > maxp:
        f = sc['factor']
        base = base * ((f * seq_len / maxp) - (f - 1)) ** (dim / (dim - 2))
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if kind == 'linear':
        inv = inv / sc['factor']
    if kind == 'llama3':
        f, lo, hi, L = sc['factor'], sc['low_freq_factor'], sc['high_freq_factor'], sc['original_max_position_embeddings']
        wavelen = 2 * math.pi / inv
        out = torch.where(wavelen > L / lo, inv / f, inv)
        smooth = (L / wavelen - lo) / (hi - lo)
        blended = (1 - smooth) * out / f + smooth * out
        medium = ~(wavelen < L / hi) & ~(wavelen > L / lo)
        inv = torch.where(medium, blended, out)
    return inv


def rope(x, positions, inv):
    """Rotate the first len(inv)*2 features of x (B, H, T, D), half-split pairs (i, i + d/2)."""
    ang = (positions.float()[:, None] * inv[None, :]).double()  # float32 angles, as transformers
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    rd = 2 * inv.numel()
    xr, xp = x[..., :rd], x[..., rd:]
    x1, x2 = xr[..., : rd // 2], xr[..., rd // 2:]
    rotated = xr * cos + torch.cat([-x2, x1], -1) * sin
    return torch.cat([rotated, xp], -1)


def norm_f(c, x, w, b):
    if c['phi']:
        return torch.nn.functional.layer_norm(x, x.shape[-1:], w, b, c['eps'])
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c['eps']) * w


def forward(c, w, ids, lora=None):
    """logits (T, V) in float64 for one sequence. lora: {module: (A, B, scale)}."""
    W = {k: v.double() for k, v in w.items()}
    g = lambda k: W.get(k)

    def lin(name, x):
        y = x @ W[name + '.weight'].T
        if name + '.bias' in W:
            y = y + W[name + '.bias']
        if lora and name in lora:
            A, B, s = lora[name]
            y = y + s * (x @ A.T) @ B.T
        return y

    Tn = ids.numel()
    H, Hkv, D = c['num_attention_heads'], c['num_key_value_heads'], c['head_dim']
    pos = torch.arange(Tn)
    inv = inv_freq(c, Tn)
    x = W['model.embed_tokens.weight'][ids]
    for l in range(c['num_hidden_layers']):
        p = f'model.layers.{l}.'
        h = norm_f(c, x, g(p + 'input_layernorm.weight'), g(p + 'input_layernorm.bias'))
        q = lin(p + 'self_attn.q_proj', h).view(Tn, H, D)
        k = lin(p + 'self_attn.k_proj', h).view(Tn, Hkv, D)
        v = lin(p + 'self_attn.v_proj', h).view(Tn, Hkv, D).transpose(0, 1)
        if c['qk_norm']:
            qn, kn = ('q_layernorm', 'k_layernorm') if c['phi'] else ('q_norm', 'k_norm')
            q = norm_f(c, q, g(p + f'self_attn.{qn}.weight'), g(p + f'self_attn.{qn}.bias'))
            k = norm_f(c, k, g(p + f'self_attn.{kn}.weight'), g(p + f'self_attn.{kn}.bias'))
        q = rope(q.transpose(0, 1), pos, inv)  # (H, T, D)
        k = rope(k.transpose(0, 1), pos, inv)
        groups = H // Hkv
        k, v = k.repeat_interleave(groups, 0), v.repeat_interleave(groups, 0)  # kv head j serves query heads j*groups ...
        s = q @ k.transpose(-1, -2) / math.sqrt(D)
        i, j = pos[:, None], pos[None, :]
        masked = j > i
        if c['window'] is not None and l >= c['window_from']:
            masked = masked | (i - j >= c['window'])  # a query sees `window` keys, itself included
        s = s.masked_fill(masked, float('-inf'))
        y = (s.softmax(-1) @ v).transpose(0, 1).reshape(Tn, H * D)
        a = lin(p + ('self_attn.dense' if c['phi'] else 'self_attn.o_proj'), y)
        if c['phi']:
            m = lin(p + 'mlp.fc2', torch.nn.functional.gelu(lin(p + 'mlp.fc1', h), approximate='tanh'))
            x = x + a + m
        else:
            x = x + a
            h2 = norm_f(c, x, g(p + 'post_attention_layernorm.weight'), None)
            gate = lin(p + 'mlp.gate_proj', h2)
            x = x + lin(p + 'mlp.down_proj', torch.nn.functional.silu(gate) * lin(p + 'mlp.up_proj', h2))
    fn = 'model.final_layernorm' if c['phi'] else 'model.norm'
    x = norm_f(c, x, g(fn + '.weight'), g(fn + '.bias'))
    if c.get('tie_word_embeddings', False):
        return x @ W['model.embed_tokens.weight'].T
    return lin('lm_head', x)

# ------------------------------------------------------------------ cases


def base(model_type, **kw):
    cfg = {'model_type': model_type, 'vocab_size': V, 'hidden_size': 16, 'intermediate_size': 40, 'num_hidden_layers': 2,
           'num_attention_heads': 4, 'num_key_value_heads': 2, 'max_position_embeddings': 32, 'rope_theta': 100.0,
           'bos_token_id': 1, 'eos_token_id': 2}
    cfg.update(kw)
    return cfg


CASES = {
    'llama': (base('llama', tie_word_embeddings=False), 'F32'),
    'llama-tied-bias': (base('llama', tie_word_embeddings=True, attention_bias=True, mlp_bias=True, num_key_value_heads=1), 'F32'),
    'llama-rope-linear': (base('llama', rope_scaling={'type': 'linear', 'factor': 2.0}), 'F32'),
    'llama-rope-dynamic': (base('llama', max_position_embeddings=16, rope_scaling={'rope_type': 'dynamic', 'factor': 2.0}), 'F32'),
    'llama-rope-llama3': (base('llama', head_dim=8, rope_scaling={'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0,
                                                                  'high_freq_factor': 4.0, 'original_max_position_embeddings': 32}), 'BF16'),
    'mistral': (base('mistral', sliding_window=5), 'BF16'),
    'qwen2': (base('qwen2', tie_word_embeddings=True, use_sliding_window=True, sliding_window=6, max_window_layers=1, rms_norm_eps=1e-5), 'F16'),
    'qwen3': (base('qwen3', head_dim=8, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True), 'F32'),
    'phi': (base('phi', hidden_size=16, num_attention_heads=2, num_key_value_heads=None, partial_rotary_factor=0.5,
                 hidden_act='gelu_new', layer_norm_eps=1e-5, intermediate_size=48), 'F32'),
}
SHARDED = {'qwen3'}


def main():
    gen = torch.Generator().manual_seed(1234)
    for name, (cfg, dtype) in CASES.items():
        cfg = {k: v for k, v in cfg.items() if v is not None}
        c = full(cfg)
        w = make_weights(c, gen)
        store = {'F32': torch.float32, 'BF16': torch.bfloat16, 'F16': torch.float16}[dtype]
        w = {k: v.to(store) for k, v in w.items()}  # the reference uses exactly the stored values
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, 'config.json'), 'w') as f:
            json.dump({**cfg, 'architectures': [{'llama': 'LlamaForCausalLM', 'mistral': 'MistralForCausalLM', 'qwen2': 'Qwen2ForCausalLM',
                                                 'qwen3': 'Qwen3ForCausalLM', 'phi': 'PhiForCausalLM'}[cfg['model_type']]],
                       'torch_dtype': {'F32': 'float32', 'BF16': 'bfloat16', 'F16': 'float16'}[dtype]}, f, indent=2)
        if name in SHARDED:
            names = sorted(w)
            half = len(names) // 2
            shards = {'model-00001-of-00002.safetensors': names[:half], 'model-00002-of-00002.safetensors': names[half:]}
            for fname, ns in shards.items():
                write_safetensors(os.path.join(d, fname), {k: w[k] for k in ns})
            with open(os.path.join(d, 'model.safetensors.index.json'), 'w') as f:
                json.dump({'metadata': {'total_size': sum(v.numel() * v.element_size() for v in w.values())},
                           'weight_map': {k: fn for fn, ns in shards.items() for k in ns}}, f, indent=2)
        else:
            write_safetensors(os.path.join(d, 'model.safetensors'), w)
        n = T + 4 if name == 'llama-rope-dynamic' else T  # past max_position_embeddings = 16
        ids = torch.randint(0, V, (n,), generator=gen)
        logits = forward(c, {k: v.float() for k, v in w.items()}, ids)
        lp = torch.log_softmax(logits, -1)
        expected = {'tokens': ids.tolist(), 'log_softmax': [round(x, 7) for x in lp.flatten().tolist()], 'vocab_size': V}
        if name == 'llama':
            expected['lora'] = make_lora(c, {k: v.float() for k, v in w.items()}, ids, gen, d)
        with open(os.path.join(d, 'expected.json'), 'w') as f:
            json.dump(expected, f)
        print(name, dtype, 'T', n, 'mean next-token logprob', float(lp[:-1].gather(1, ids[1:, None]).mean()))


def make_lora(c, w, ids, gen, d):
    """A PEFT adapter (r=2, alpha=4, q_proj and v_proj), the logits with it, and the gradients
    of the mean next-token cross-entropy with respect to each lora_A / lora_B."""
    r, alpha = 2, 4
    ad = os.path.join(d, 'adapter')
    os.makedirs(ad, exist_ok=True)
    lora, tensors = {}, {}
    for l in range(c['num_hidden_layers']):
        for m in ('q_proj', 'v_proj'):
            name = f'model.layers.{l}.self_attn.{m}'
            out_f = w[name + '.weight'].shape[0]
            A = (torch.randn(r, c['hidden_size'], generator=gen) * 0.3).float()
            B = (torch.randn(out_f, r, generator=gen) * 0.3).float()  # non-zero: a trained adapter
            tensors[f'base_model.model.{name}.lora_A.weight'] = A
            tensors[f'base_model.model.{name}.lora_B.weight'] = B
            lora[name] = (A.double().requires_grad_(), B.double().requires_grad_(), alpha / r)
    write_safetensors(os.path.join(ad, 'adapter_model.safetensors'), tensors)
    with open(os.path.join(ad, 'adapter_config.json'), 'w') as f:
        json.dump({'peft_type': 'LORA', 'task_type': 'CAUSAL_LM', 'r': r, 'lora_alpha': alpha, 'lora_dropout': 0.0,
                   'target_modules': ['q_proj', 'v_proj'], 'bias': 'none', 'fan_in_fan_out': False,
                   'init_lora_weights': True, 'base_model_name_or_path': None}, f, indent=2)
    logits = forward(c, w, ids, lora)
    loss = torch.nn.functional.cross_entropy(logits[:-1], ids[1:])
    loss.backward()
    grads = {}
    for name, (A, B, _) in lora.items():
        grads[f'{name}.lora_A'] = [round(x, 9) for x in A.grad.flatten().tolist()]
        grads[f'{name}.lora_B'] = [round(x, 9) for x in B.grad.flatten().tolist()]
    lp = torch.log_softmax(logits.detach(), -1)
    return {'log_softmax': [round(x, 7) for x in lp.flatten().tolist()], 'loss': float(loss), 'grads': grads}


if __name__ == '__main__':
    main()
