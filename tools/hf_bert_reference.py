#!/usr/bin/env python3
"""Independent PyTorch reference for attn's Hugging Face BERT (src/models/hf-bert.ts), written
from the BERT paper (Devlin et al. 2019) and the Hugging Face model documentation (there is no
`transformers` package here): post-norm encoder layers, word + position + token-type embeddings
with a LayerNorm, erf GELU, the pooler, the masked-LM head with the decoder tied to the word
embeddings, and the sequence-classification head.

Writes tiny random-weight checkpoints in the Hugging Face layout under test/fixtures/hf-bert:
  bert-mlm  (BertForPreTraining names: `bert.` prefix, cls.predictions.*, pooler, and the
             next-sentence head cls.seq_relationship.*, which attn ignores)
  bert-cls  (BertForSequenceClassification: bert.* + classifier.*, 3 labels, bfloat16 file)
and expected.json: two rows (the second padded, with its attention mask), token types, the
float64 log-softmax of the MLM logits, or the classifier logits.
Usage: /usr/bin/python3 tools/hf_bert_reference.py [out_dir]; run once, fixtures are committed.
"""
import json
import math
import os
import sys

import torch

from torch_safetensors import write_safetensors

OUT = sys.argv[1] if len(sys.argv) > 1 else 'test/fixtures/hf-bert'
V, C, L, H, I, P, TYPES = 50, 16, 2, 4, 40, 24, 2
EPS = 1e-12


def weights(gen, mlm, labels):
    w = {}

    def lin(name, o, i):
        w[name + '.weight'] = torch.randn(o, i, generator=gen) / math.sqrt(i)
        w[name + '.bias'] = torch.randn(o, generator=gen) * 0.1

    def ln(name):
        w[name + '.weight'] = 1 + 0.2 * torch.randn(C, generator=gen)
        w[name + '.bias'] = 0.1 * torch.randn(C, generator=gen)

    e = 'bert.embeddings.'
    w[e + 'word_embeddings.weight'] = torch.randn(V, C, generator=gen) * 0.5
    w[e + 'position_embeddings.weight'] = torch.randn(P, C, generator=gen) * 0.5
    w[e + 'token_type_embeddings.weight'] = torch.randn(TYPES, C, generator=gen) * 0.5
    ln(e + 'LayerNorm')
    for l in range(L):
        p = f'bert.encoder.layer.{l}.'
        for m in ('query', 'key', 'value'):
            lin(p + 'attention.self.' + m, C, C)
        lin(p + 'attention.output.dense', C, C)
        ln(p + 'attention.output.LayerNorm')
        lin(p + 'intermediate.dense', I, C)
        lin(p + 'output.dense', C, I)
        ln(p + 'output.LayerNorm')
    lin('bert.pooler.dense', C, C)
    if mlm:
        lin('cls.predictions.transform.dense', C, C)
        ln('cls.predictions.transform.LayerNorm')
        w['cls.predictions.bias'] = torch.randn(V, generator=gen) * 0.1
        lin('cls.seq_relationship', 2, C)  # BertForPreTraining's next-sentence head
    if labels:
        lin('classifier', labels, C)
    return {k: v.float() for k, v in w.items()}


def forward(w, ids, mask, types, mlm, labels):
    W = {k: v.double() for k, v in w.items()}
    B, T = ids.shape
    D = C // H
    ln = lambda x, n: torch.nn.functional.layer_norm(x, (C,), W[n + '.weight'], W[n + '.bias'], EPS)
    lin = lambda x, n: x @ W[n + '.weight'].T + W[n + '.bias']
    gelu = lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    e = 'bert.embeddings.'
    x = W[e + 'word_embeddings.weight'][ids] + W[e + 'position_embeddings.weight'][torch.arange(T)][None] + W[e + 'token_type_embeddings.weight'][types]
    x = ln(x, e + 'LayerNorm')
    bias = torch.zeros(B, 1, 1, T, dtype=torch.float64).masked_fill(mask[:, None, None, :] == 0, float('-inf'))
    for l in range(L):
        p = f'bert.encoder.layer.{l}.'
        heads = lambda t: t.view(B, T, H, D).transpose(1, 2)
        q, k, v = (heads(lin(x, p + 'attention.self.' + m)) for m in ('query', 'key', 'value'))
        a = ((q @ k.transpose(-1, -2) / math.sqrt(D) + bias).softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = ln(x + lin(a, p + 'attention.output.dense'), p + 'attention.output.LayerNorm')
        x = ln(x + lin(gelu(lin(x, p + 'intermediate.dense')), p + 'output.dense'), p + 'output.LayerNorm')
    out = {}
    if mlm:
        h = ln(gelu(lin(x, 'cls.predictions.transform.dense')), 'cls.predictions.transform.LayerNorm')
        logits = h @ W[e + 'word_embeddings.weight'].T + W['cls.predictions.bias']
        out['mlm_log_softmax'] = [round(v, 7) for v in torch.log_softmax(logits, -1).flatten().tolist()]
    if labels:
        pooled = torch.tanh(lin(x[:, 0], 'bert.pooler.dense'))
        out['classifier_logits'] = [round(v, 7) for v in lin(pooled, 'classifier').flatten().tolist()]
    return out


def main():
    gen = torch.Generator().manual_seed(99)
    for name, mlm, labels, store in (('bert-mlm', True, 0, torch.float32), ('bert-cls', False, 3, torch.bfloat16)):
        w = {k: v.to(store) for k, v in weights(gen, mlm, labels).items()}
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        cfg = {'architectures': ['BertForPreTraining' if mlm else 'BertForSequenceClassification'], 'model_type': 'bert',
               'vocab_size': V, 'hidden_size': C, 'num_hidden_layers': L, 'num_attention_heads': H, 'intermediate_size': I,
               'hidden_act': 'gelu', 'max_position_embeddings': P, 'type_vocab_size': TYPES, 'layer_norm_eps': EPS,
               'pad_token_id': 0, 'hidden_dropout_prob': 0.1, 'attention_probs_dropout_prob': 0.1,
               'torch_dtype': 'float32' if store == torch.float32 else 'bfloat16'}
        if labels:
            cfg['id2label'] = {str(i): f'LABEL_{i}' for i in range(labels)}
            cfg['label2id'] = {f'LABEL_{i}': i for i in range(labels)}
        with open(os.path.join(d, 'config.json'), 'w') as f:
            json.dump(cfg, f, indent=2)
        write_safetensors(os.path.join(d, 'model.safetensors'), w)
        T = 12
        ids = torch.randint(1, V, (2, T), generator=gen)
        ids[:, 0] = 2  # a [CLS]-like first token
        mask = torch.ones(2, T, dtype=torch.int64)
        mask[1, 8:] = 0
        ids[1, 8:] = 0  # padding
        types = torch.zeros(2, T, dtype=torch.int64)
        types[0, 6:] = 1  # a sentence pair in the first row
        exp = {'ids': ids.tolist(), 'attention_mask': mask.tolist(), 'token_type_ids': types.tolist(), 'vocab_size': V}
        exp.update(forward({k: v.float() for k, v in w.items()}, ids, mask, types, mlm, labels))
        with open(os.path.join(d, 'expected.json'), 'w') as f:
            json.dump(exp, f)
        print(name, 'written')


if __name__ == '__main__':
    main()
