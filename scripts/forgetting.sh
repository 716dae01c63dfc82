#!/usr/bin/env bash
# Catastrophic forgetting, measured (issue 14, part 2): SmolLM2-135M-Instruct on a CPU,
#   base  -> tuned (narrow task data only)  -> tuned with replay (task + broad instruction data)
# each scored on a task gold set (the demo's label task) and a broad gold set (MMLU test items,
# letter answers parsed from free text), with bootstrap intervals and paired tests against the
# base, in one table (forgetting_out/forgetting.md) and one PNG (forgetting_out/forgetting.png).
# Run through `make forgetting`. Needs ../shared/realdata (MMLU test CSVs, Alpaca rows).
# Knobs (environment): FORGETTING_STEPS (20), FORGETTING_TASK_GOLD (40), FORGETTING_BROAD_GOLD
# (100), FORGETTING_REPLAY (0.3: share of broad data in the replay mix), FORGETTING_OUT.
# It checks itself loosely: every stage ran, the table and PNG exist, and the tuned model beats
# the base on the task. The broad --max-drop gate is reported, not enforced (forgetting is what
# this measures, not a failure of the script).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${FORGETTING_OUT:-$ROOT/forgetting_out}
REALDATA=${REALDATA:-$ROOT/../shared/realdata}
STEPS=${FORGETTING_STEPS:-20}
TASK_GOLD=${FORGETTING_TASK_GOLD:-40}
BROAD_GOLD=${FORGETTING_BROAD_GOLD:-100}
REPLAY=${FORGETTING_REPLAY:-0.3}
PY="$ROOT/.venv/bin/python"
MMLU=$REALDATA/benchmarks/mmlu/test
ALPACA=$REALDATA/datasets/alpaca_format/torchtune_alpaca_tiny.json
source "$ROOT/scripts/example_lib.sh"
require "forgetting" "$MMLU" "$ALPACA"
start_in "$OUT"
smollm2

step "1. task data: the demo's label table -> records, dedup, split, a task gold set of $TASK_GOLD"
sftdata convert "$ROOT/fixtures/demo/items.csv" --from classification \
  --template "Category of: {text}" --source task \
  | sftdata dedup -o task.parquet
sftdata split task.parquet --stratify label --ratios train=0.8,val=0.1,test=0.1 -o splits/
sftdata gold freeze splits/test.parquet -n "$TASK_GOLD" --seed 1 --gold-out task_gold.parquet \
  -o /dev/null

step "2. broad gold set: $BROAD_GOLD MMLU test items from all 57 subjects (exact duplicates dropped)"
awk 'FNR > 1 || NR == 1' "$MMLU"/*_test.csv > mmlu_test.csv
sftdata convert mmlu_test.csv | sftdata dedup --mode exact -o mmlu.parquet
sftdata gold freeze mmlu.parquet -n "$BROAD_GOLD" --seed 1 --gold-out broad_gold.parquet -o /dev/null

step "3. training sets: task only, and task + broad instruction data (Alpaca) mixed by balance --mix"
sftdata convert splits/train.parquet -o tuned.jsonl
# split=train like the task records (pack wants every row's split or none)
sftdata convert "$ALPACA" --source broad | sftdata split --ratios train=1 > broad.jsonl
TASK_N=$(wc -l < tuned.jsonl)
BROAD_N=$(wc -l < broad.jsonl)
# the largest mix downsampling can give at this share: neither source runs out
read -r TOTAL TASK_SHARE < <("$PY" -c "import sys; t, b, r = int(sys.argv[1]), int(sys.argv[2]), \
float(sys.argv[3]); print(int(min(t / (1 - r), b / r)), round(1 - r, 6))" "$TASK_N" "$BROAD_N" "$REPLAY")
cat tuned.jsonl broad.jsonl \
  | sftdata balance --by source --mix "task=$TASK_SHARE,broad=$REPLAY" \
      --total "$TOTAL" --seed 1 --report replay_mix.json -o replay.jsonl

step "4. render, tokenize, pack both training sets (seq-len 256)"
for name in tuned replay; do
  sftdata render-template -t tok "$name.jsonl" \
    | sftdata tokenize -t tok --max-len 256 -o "${name}_tokens.parquet"
  sftdata pack "${name}_tokens.parquet" --seq-len 256 -o "shards_$name/"
done

step "5. fine-tune twice, $STEPS steps each (same steps, lr and seed; only the data differ)"
for name in tuned replay; do
  sfttrain run "shards_$name/" --model "$GGUF" -o "runs/$name" max_steps="$STEPS" lr=1e-3
done

step "6. generate on both gold sets: base, tuned, replay (greedy; short answers)"
generate() {  # MODEL NAME
  sfttrain generate "$1" --template shards_tuned/ --records task_gold.parquet --max-new-tokens 8 \
    -o "task_$2.jsonl"
  sfttrain generate "$1" --template shards_tuned/ --records broad_gold.parquet \
    --max-new-tokens 16 -o "broad_$2.jsonl"
}
generate "$GGUF" base
generate runs/tuned tuned
generate runs/replay replay

step "7. score: each model with its 95% interval, the paired difference with the base and its test"
sftdata gold score task_gold.parquet task_base.jsonl task_tuned.jsonl task_replay.jsonl \
  --names base,tuned,replay --seed 1 --report task_score.json
set +e
sftdata gold score broad_gold.parquet broad_base.jsonl broad_tuned.jsonl broad_replay.jsonl \
  --names base,tuned,replay --seed 1 --max-drop accuracy=0.05 --report broad_score.json
GATE=$?
set -e
[ "$GATE" -le 1 ] || exit "$GATE"  # 1 is the gate's verdict; anything else is a failure

step "8. one table and one PNG"
"$PY" "$ROOT/scripts/forgetting_report.py" task_score.json broad_score.json \
  --md forgetting.md --png forgetting.png
cat forgetting.md
"$PY" - <<'PY'
import json, os, sys
rows = json.load(open("task_score.json"))["groups"]
acc = next(g for g in rows.values() if "accuracy" in g["metrics"])["metrics"]["accuracy"]["models"]
if not (os.path.getsize("forgetting.png") and acc[1]["value"] > acc[0]["value"]):
    sys.exit("forgetting FAILED: no PNG, or the tuned model does not beat the base on the task")
PY
echo "broad --max-drop accuracy=0.05 gate: $([ "$GATE" = 0 ] && echo passed || echo failed)" >&2
echo "forgetting: done in $(( $(date +%s) - START )) s; see $OUT/forgetting.md and forgetting.png" >&2
