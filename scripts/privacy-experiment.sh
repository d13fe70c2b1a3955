#!/usr/bin/env bash
# The memorisation / DP-SGD experiment of docs/responsible.md, scaled down for a shared 2-core
# machine: 60,000 characters of Tiny Shakespeare with 4 canaries of 5 digits (k = 1, 4, 16, 64), a 2-layer
# 64-wide character GPT trained 500 updates of 16 windows of 64 characters, without DP and with
# DP-SGD at eps ~ 8 and ~ 1; a reference model on disjoint text; two more sizes for extraction.
# Usage: scripts/privacy-experiment.sh WORKDIR   (runs everything under nice; ~30-40 min there)
set -euo pipefail
W=${1:?work directory}
A="node $(cd "$(dirname "$0")/.." && pwd)/dist/src/cli/main.js"
SRC=$(cd "$(dirname "$0")/.." && pwd)/data/tinyshakespeare/input.txt
mkdir -p "$W" && cd "$W"
head -c 60000 "$SRC" > base.txt
$A probe canaries --data base.txt --out train.txt --canaries canaries.json --k 1,4,16,64 --digits 5 --seed 1
python3 - "$SRC" <<'PY'
import sys
t = open(sys.argv[1]).read()
train = open('train.txt').read()
vocab = set(train)
keep = lambda s: ''.join(c for c in s if c in vocab)  # one character vocabulary for all three texts
open('ref.txt', 'w').write(keep(t[60000:120000]))        # the reference model's (disjoint) text
open('nonmember.txt', 'w').write(keep(t[120000:180000]))  # seen by neither model
open('train_part.txt', 'w').write(train[:int(len(train) * 0.9)])  # the training split
PY
$A prepare --input train.txt --out ds >/dev/null
$A prepare --input ref.txt --out ds_ref --tokenizer ds >/dev/null  # the target's tokenizer: the ratio compares the same ids
COMMON="--n_head 4 --block_size 64 --batch_size 16 --max_iters 500 --learning_rate 3e-3 --min_lr 3e-4 --warmup_iters 20 --eval_interval 100 --eval_iters 20 --dropout 0 --weight_decay 0 --sample 0 --seed 1"
run() { local out=$1; shift; nice -n 10 $A train --out "$out" $COMMON "$@" 2>&1 | grep -E "^step|^done" | tail -2; }
run base --dataset ds --n_layer 2 --n_embd 64
run dp8 --dataset ds --n_layer 2 --n_embd 64 --dp_clip 1 --dp_noise 0.669
run dp1 --dataset ds --n_layer 2 --n_embd 64 --dp_clip 1 --dp_noise 1.867
run ref --dataset ds_ref --n_layer 2 --n_embd 64
run small --dataset ds --n_layer 1 --n_embd 32
run large --dataset ds --n_layer 3 --n_embd 128
for m in base dp8 dp1; do
  echo "== memorisation $m"; nice -n 10 $A probe memorisation --model $m/last --canaries canaries.json --samples 1000 --json mem_$m.json
  echo "== membership $m"; nice -n 10 $A probe membership --model $m/last --reference ref/last --members train_part.txt --nonmembers nonmember.txt --n 400 --json mi_$m.json
done
for m in small base large; do
  echo "== extraction $m"; nice -n 10 $A probe memorisation --model $m/last --canaries canaries.json --samples 10 --exact false --extraction_text train_part.txt --extraction_n 200 --json ext_$m.json
done
