#!/usr/bin/env bash
# The bias figures of docs/responsible.md, scaled down for a shared 2-core machine: a 2-layer
# 128-wide SST-2 classifier from scratch (400 updates of 64 sentences), without and with
# counterfactual data augmentation (cda_pairs), probed on the SST-2 test set; the occupational
# probe on a language model given as $2 (e.g. the character model of privacy-experiment.sh).
# Usage (from the repository root): scripts/bias-experiment.sh WORKDIR [LM_DIR]
set -euo pipefail
W=${1:?work directory}
LM=${2:-}
A="node $(pwd)/dist/src/cli/main.js"
mkdir -p "$W"
COMMON="--task sst2 --train_file ${SST2_TRAIN:-../shared/data/sst2/train.tsv} --n_layer 2 --n_head 4 --n_embd 128 --n_inner 256 --batch_size 64 --learning_rate 1e-3 --vocab_size 2000 --max_iters 400 --eval_interval 100 --eval_max 1000 --seed 1 --quiet"
nice -n 10 $A finetune $COMMON --out "$W/clf" 2>&1 | tail -2
nice -n 10 $A finetune $COMMON --out "$W/clf_cda" --cda_pairs data/bias/gender-pairs.tsv 2>&1 | tail -2
for m in clf clf_cda; do
  echo "== counterfactual $m (best: $(grep -h val_loss "$W/$m/metrics.jsonl" | tail -1 | cut -c1-200))"
  nice -n 10 $A probe bias counterfactual --model "$W/$m/best" --file data/sst2/test.tsv --json "$W/cf_$m.json"
done
if [ -n "$LM" ]; then
  echo "== occupations $LM"; nice -n 10 $A probe bias occupations --model "$LM" --json "$W/occ.json"
fi
