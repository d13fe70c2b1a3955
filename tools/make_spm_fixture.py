#!/usr/bin/env python3
"""A T5-style tokenizer.json and its expected ids, with SentencePiece itself as the reference
(Debian's python3-sentencepiece 0.1.97; there is no T5 tokenizer file on this machine).

Trains a 1000-piece Unigram SentencePiece model with the default nmt_nfkc normalization on a
sample of SST-2 and Multi30k (plus full-width letters, ligatures, circled digits, half-width
katakana and accents, so the normalization rules are exercised), writes it as a Hugging Face
tokenizer.json the way T5's is laid out (Precompiled normalizer with the model's
precompiled_charsmap, WhitespaceSplit + Metaspace, Unigram with the model's scores, `$A </s>`
template, Metaspace decoder), and expected.json: test sentences with SentencePiece's
encode_as_ids. Usage: /usr/bin/python3 tools/make_spm_fixture.py [out_dir]; run once, committed.
"""
import base64
import gzip
import json
import os
import sys
import tempfile

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

OUT = sys.argv[1] if len(sys.argv) > 1 else 'test/fixtures/spm-t5'
SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'data')
SST2 = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'data', 'sst2')
ODD = ['Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３', 'ﬁne ﬂow ligatures', '① ② ③ circled', 'ｶﾀｶﾅ half-width', 'Café naïve Ångström',
       'x² m³ ½ ¼', '™ ℃ №', 'Ｈｅｌｌｏ，　ｗｏｒｌｄ！', 'ǅemal ĳssel', 'e\u0301 a\u0308']


def main():
    spm.set_random_generator_seed(1)
    sst = [l.split('\t')[0] for l in open(os.path.join(SST2, 'train.tsv'), encoding='utf8').read().split('\n')[1:4000]]
    de = gzip.open(os.path.join(SHARED, 'multi30k', 'train.de.gz'), 'rt', encoding='utf8').read().split('\n')[:3000]
    en = gzip.open(os.path.join(SHARED, 'multi30k', 'train.en.gz'), 'rt', encoding='utf8').read().split('\n')[:3000]
    with tempfile.TemporaryDirectory() as d:
        corpus = os.path.join(d, 'corpus.txt')
        with open(corpus, 'w', encoding='utf8') as f:
            f.write('\n'.join(l for l in sst + de + en + ODD * 20 if l.strip()))
        prefix = os.path.join(d, 'spm')
        spm.SentencePieceTrainer.train(input=corpus, model_prefix=prefix, vocab_size=1000, model_type='unigram', character_coverage=1.0,
                                       pad_id=0, eos_id=1, unk_id=2, bos_id=-1, normalization_rule_name='nmt_nfkc', num_threads=1,
                                       minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=prefix + '.model')
        m = pb.ModelProto()
        m.ParseFromString(open(prefix + '.model', 'rb').read())
    special = lambda c, i: {'id': i, 'content': c, 'single_word': False, 'lstrip': False, 'rstrip': False, 'normalized': False, 'special': True}
    tok = {
        'version': '1.0', 'truncation': None, 'padding': None,
        'added_tokens': [special('<pad>', 0), special('</s>', 1), special('<unk>', 2)],
        'normalizer': {'type': 'Precompiled', 'precompiled_charsmap': base64.b64encode(m.normalizer_spec.precompiled_charsmap).decode()},
        'pre_tokenizer': {'type': 'Sequence', 'pretokenizers': [{'type': 'WhitespaceSplit'},
                                                               {'type': 'Metaspace', 'replacement': '\u2581', 'prepend_scheme': 'always', 'split': True}]},
        'post_processor': {'type': 'TemplateProcessing', 'single': [{'Sequence': {'id': 'A', 'type_id': 0}}, {'SpecialToken': {'id': '</s>', 'type_id': 0}}],
                           'pair': [{'Sequence': {'id': 'A', 'type_id': 0}}, {'SpecialToken': {'id': '</s>', 'type_id': 0}},
                                    {'Sequence': {'id': 'B', 'type_id': 0}}, {'SpecialToken': {'id': '</s>', 'type_id': 0}}],
                           'special_tokens': {'</s>': {'id': '</s>', 'ids': [1], 'tokens': ['</s>']}}},
        'decoder': {'type': 'Metaspace', 'replacement': '\u2581', 'prepend_scheme': 'always', 'split': True},
        'model': {'type': 'Unigram', 'unk_id': 2, 'vocab': [[p.piece, p.score] for p in m.pieces], 'byte_fallback': False},
    }
    dev = [l.split('\t')[0] for l in open(os.path.join(SST2, 'dev.tsv'), encoding='utf8').read().split('\n')[1:300]]
    vde = gzip.open(os.path.join(SHARED, 'multi30k', 'val.de.gz'), 'rt', encoding='utf8').read().split('\n')[:150]
    ven = gzip.open(os.path.join(SHARED, 'multi30k', 'val.en.gz'), 'rt', encoding='utf8').read().split('\n')[:150]
    texts = [t for t in dev + vde + ven + ODD + ['two  spaces', ' leading', 'trailing ', 'tab\there', 'Ｆｕｌｌ ﬁ ① ｶ'] if t != '']
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, 'tokenizer.json'), 'w', encoding='utf8') as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(OUT, 'expected.json'), 'w', encoding='utf8') as f:
        json.dump({'sentencepiece': spm.__version__, 'texts': texts, 'ids': [sp.encode_as_ids(t) for t in texts],
                   'normalized': [sp.encode_as_pieces(t) for t in texts[-15:]]}, f, ensure_ascii=False)
    print(len(texts), 'texts;', os.path.getsize(os.path.join(OUT, 'tokenizer.json')), 'bytes of tokenizer.json')


if __name__ == '__main__':
    main()
