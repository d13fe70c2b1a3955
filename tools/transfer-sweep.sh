#!/usr/bin/env bash
# The transfer-learning table of docs/transfer.md in one command: masked-LM pre-training of an
# encoder, then SST-2 fine-tuning at 100 %, 10 % and 1 % of the labels, from scratch and from
# the pre-trained encoder, at each of several learning rates (each cell reports the test accuracy
# of the rate with the best dev accuracy). Fine-tunes run JOBS at a time (a GPU has room for
# several small models at once; on a 2-core CPU use JOBS=1). The from-scratch runs start at
# once, beside the pre-training.
#   tools/transfer-sweep.sh OUTDIR
#   tools/gpu-run.sh --script tools/transfer-sweep.sh "$OUT/sweep"     (on the GPU machine)
# Environment (defaults in brackets):
#   ATTN_NODE [node]  DEVICE [webgpu]  JOBS [4]
#   MODEL ["--n_layer 4 --d_model 256 --n_head 4 --d_ff 1024"]
#   PT_ARGS ["--batch_size 256 --max_iters 4000 --eval_interval 1000 --eval_batches 20"]
#   LRS_SCRATCH ["1e-3 3e-4"]  LRS_PRE ["3e-4 1e-4"]   (an entry LR+loraR fine-tunes LoRA
#                               adapters of rank R and the head instead of every weight)  SEEDS ["1337 2 3"]  POOLING [mean]
#   SEEDS_FULL ["1337"]        the seeds at 100 % of the labels (the longest runs)
#   FT_STEPS ["1000 300 100"] (steps at 100 %, 10 %, 1 %; 5 evaluations each)
#   STAGES ["mlm scratch pre"] (pre-training, from-scratch fine-tunes, pre-trained fine-tunes;
#                               "pre" alone with an existing OUTDIR/mlm/best)
#   FT_ARGS [""]               more finetune flags for every fine-tune (e.g. "--threads 1")
#   FRACTIONS ["1 0.1 0.01"]   the label fractions to run
#   PROMPT [""]                 prompt-based fine-tuning: the template after each sentence
#                               (e.g. "it was [MASK] ."); VERBALIZERS ["terrible,great"]
#   PT_DATA ["data/sst2/train.tsv,data/multi30k/train.en.gz,data/tinyshakespeare/input.txt"]
#                              the pre-training text (comma-separated; tools/imdb-corpus.mjs makes
#                              13 M words of movie reviews for it)
#   PT_TIMEOUT [0]             stop pre-training after this many seconds (0: never); the
#                               fine-tunes then start from the best checkpoint saved so far
# Writes OUTDIR/results.jsonl (one line per fine-tune: name, init, fraction, seed, lr and the
# finetune's final JSON) and OUTDIR/logs/*.log.
set -uo pipefail
cd "$(dirname "$0")/.."
O=${1:?usage: tools/transfer-sweep.sh OUTDIR}
NODE=${ATTN_NODE:-node}
DEVICE=${DEVICE:-webgpu}
JOBS=${JOBS:-4}
MODEL=${MODEL:---n_layer 4 --d_model 256 --n_head 4 --d_ff 1024}
PT_ARGS=${PT_ARGS:---batch_size 256 --max_iters 4000 --eval_interval 1000 --eval_batches 20}
LRS_SCRATCH=${LRS_SCRATCH:-1e-3 3e-4}
LRS_PRE=${LRS_PRE:-3e-4 1e-4}
SEEDS=${SEEDS:-1337 2 3}
SEEDS_FULL=${SEEDS_FULL:-1337}
POOLING=${POOLING:-mean}
FT_STEPS=${FT_STEPS:-1000 300 100}
STAGES=${STAGES:-mlm scratch pre}
PT_TIMEOUT=${PT_TIMEOUT:-0}
FRACTIONS=${FRACTIONS:-1 0.1 0.01}
FT_ARGS=${FT_ARGS:-}
PROMPT=${PROMPT:-}
VERBALIZERS=${VERBALIZERS:-terrible,great}
PT_DATA=${PT_DATA:-data/sst2/train.tsv,data/multi30k/train.en.gz,data/tinyshakespeare/input.txt}
mkdir -p "$O/logs"
ATTN="$NODE dist/src/cli/main.js"
export EGL_PLATFORM=${EGL_PLATFORM:-surfaceless}
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*" >&2; }

# One fine-tune job per line: NAME INIT FRACTION SEED LR; recipe by fraction as in docs/transfer.md.
jobs_for() { # init lrs
  local init=$1 lrs=$2 lr s
  for lr in $lrs; do
    if [[ " $FRACTIONS " == *" 1 "* ]]; then for s in $SEEDS_FULL; do echo "$init-f1-s$s-lr$lr $init 1 $s $lr"; done; fi
    if [[ " $FRACTIONS " == *" 0.1 "* ]]; then for s in $SEEDS; do echo "$init-f0.1-s$s-lr$lr $init 0.1 $s $lr"; done; fi
    if [[ " $FRACTIONS " == *" 0.01 "* ]]; then for s in $SEEDS; do echo "$init-f0.01-s$s-lr$lr $init 0.01 $s $lr"; done; fi
  done
}
run_one() { # NAME INIT FRACTION SEED LR
  local name=$1 init=$2 frac=$3 seed=$4 lr=${5%%+*} steps interval from lora=
  [[ $5 == *+lora* ]] && lora="--lora_rank ${5##*+lora}"
  local -a prompt=()
  [ -n "$PROMPT" ] && prompt=(--prompt "$PROMPT" --verbalizers "$VERBALIZERS")
  local -a st=($FT_STEPS)
  case $frac in 1) steps=${st[0]} ;; 0.1) steps=${st[1]} ;; *) steps=${st[2]} ;; esac
  interval=$(( steps / 5 > 0 ? steps / 5 : 1 ))
  if [ "$init" = pre ]; then from="--init_from $O/mlm/best"; else from="$MODEL"; fi
  # shellcheck disable=SC2086
  $ATTN finetune --task sst2 $from --pooling "$POOLING" --label_fraction "$frac" --seed "$seed" \
    --learning_rate "$lr" --max_iters $steps --eval_interval $interval --eval_max 1000 \
    $lora $FT_ARGS "${prompt[@]}" --device "$DEVICE" --out "$O/ft/$name" >"$O/logs/$name.log" 2>&1
  local last
  last=$(grep '^{"task"' "$O/logs/$name.log" | tail -1)
  echo "{\"name\":\"$name\",\"init\":\"$init\",\"fraction\":$frac,\"seed\":$seed,\"lr\":$lr,\"variant\":\"$5\",\"result\":${last:-null}}" >>"$O/results.jsonl"
  stamp "done $name: ${last:-FAILED}"
}
export -f run_one stamp
export O ATTN MODEL POOLING DEVICE FT_STEPS FT_ARGS PROMPT VERBALIZERS start

pt_pid=
if [[ " $STAGES " == *" mlm "* ]]; then
  stamp "pre-training: $MODEL $PT_ARGS"
  # shellcheck disable=SC2086
  timeout "$PT_TIMEOUT" $ATTN pretrain-mlm --out "$O/mlm" --data "$PT_DATA" \
    $MODEL $PT_ARGS --device "$DEVICE" >"$O/logs/mlm.log" 2>&1 &
  pt_pid=$!
fi
if [[ " $STAGES " == *" scratch "* ]]; then
  jobs_for scratch "$LRS_SCRATCH" | xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _
fi
if [ -n "$pt_pid" ]; then wait "$pt_pid"; stamp "pre-training done: $(tail -1 "$O/logs/mlm.log")"; fi
if [[ " $STAGES " == *" pre "* ]]; then
  jobs_for pre "$LRS_PRE" | xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _
fi
stamp "all done"
