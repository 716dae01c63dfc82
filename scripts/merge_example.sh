#!/usr/bin/env bash
# Merging fine-tunes (issue 14, part 3): SmolLM2-135M-Instruct on a CPU, two QLoRA fine-tunes of
# the same base on two realdata tasks,
#   A = AG News topic classification (../shared/realdata/datasets/classification)
#   B = CoNLL-2003 named entities as "TYPE: words" lines (../shared/realdata/datasets/ner)
# then the two adapters merged (linear, TIES, DARE-TIES) and every model (base, A, B, merges)
# scored on both gold sets with `sftdata gold score` (intervals, paired tests against the base).
# Writes merge_out/merging.md (the table docs/merging.md shows). Knobs (environment):
# MERGE_STEPS (40), MERGE_TRAIN (256 records per task), MERGE_GOLD (100 per task), MERGE_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${MERGE_OUT:-$ROOT/merge_out}
REALDATA=${REALDATA:-$ROOT/../shared/realdata}
STEPS=${MERGE_STEPS:-40}
TRAIN=${MERGE_TRAIN:-256}
GOLD=${MERGE_GOLD:-100}
PY="$ROOT/.venv/bin/python"
export PATH="$ROOT/.venv/bin:$PATH"
AG=$REALDATA/datasets/classification/ag_news_samples.csv
NER=$REALDATA/datasets/ner/conll2003_test.txt
source "$ROOT/scripts/example_lib.sh"
require "merge example" "$AG" "$NER"
start_in "$OUT"
smollm2

step "1. task A: AG News -> records, dedup, split, gold set of $GOLD"
sftdata convert "$AG" --from classification --source ag \
  --template $'Topic of this headline: World, Sports, Business or Sci/Tech?\n\n{title}' \
  | sftdata dedup -o ag.parquet
sftdata split ag.parquet --stratify label --ratios "train=$TRAIN,test=$GOLD" -o ag_splits/
sftdata gold freeze ag_splits/test.parquet -n "$GOLD" --seed 1 --gold-out ag_gold.parquet -o /dev/null

step "2. task B: CoNLL-2003 -> records (whole documents stay in one split), gold set of $GOLD"
sftdata convert "$NER" --from conll --source ner | sftdata dedup -o ner.parquet
sftdata split ner.parquet --ratios "train=$TRAIN,test=$((GOLD + 50))" -o ner_splits/
sftdata gold freeze ner_splits/test.parquet -n "$GOLD" --seed 1 --gold-out ner_gold.parquet \
  -o /dev/null

step "3. render with the model's template, tokenize, pack (seq-len 256), one shard set per task"
for task in ag ner; do
  sftdata render-template -t tok "${task}_splits/train.parquet" \
    | sftdata tokenize -t tok --max-len 256 -o "${task}_tokens.parquet"
  sftdata pack "${task}_tokens.parquet" --seq-len 256 -o "shards_$task/"
done

step "4. two QLoRA fine-tunes of the same base, $STEPS steps each (same lr, rank and seed)"
for task in ag ner; do
  sfttrain run "shards_$task/" --model "$GGUF" --quant nf4 -o "runs/$task" \
    max_steps="$STEPS" micro_batch=2 lr=1e-3 eval_every=0
done

step "5. merges: linear (mean, and sum), TIES and DARE-TIES (density 0.5), as full models"
sfttrain merge runs/ag runs/ner --method linear --weights 0.5,0.5 --full --dtype fp32 --out m_linear
sfttrain merge runs/ag runs/ner --method linear --weights 1,1 --full --dtype fp32 --out m_sum
sfttrain merge runs/ag runs/ner --method ties --weights 0.5,0.5 --density 0.5 --full \
  --dtype fp32 --out m_ties
sfttrain merge runs/ag runs/ner --method dare_ties --weights 0.5,0.5 --density 0.5 --seed 0 \
  --full --dtype fp32 --out m_dare_ties
# the TIES merge as an adapter (SVD to rank 2r): what the truncation costs
sfttrain merge runs/ag runs/ner --method ties --weights 0.5,0.5 --density 0.5 --out a_ties
for task in ag ner; do
  sfttrain merge "runs/$task" --dtype fp32 --out "m_$task"  # single fine-tunes, NF4 round trip
done

step "6. generate on both gold sets (greedy): base, A, B and the merges"
MODELS=(base ag ner linear sum ties dare_ties ties_adapter)
path_of() {
  case $1 in base) echo "$GGUF" ;; ties_adapter) echo a_ties ;; *) echo "m_$1" ;; esac
}
for name in "${MODELS[@]}"; do
  sfttrain generate "$(path_of "$name")" --template shards_ag/ --records ag_gold.parquet \
    --max-new-tokens 8 --device cpu -o "ag_$name.jsonl"
  sfttrain generate "$(path_of "$name")" --template shards_ner/ --records ner_gold.parquet \
    --max-new-tokens 48 --device cpu -o "ner_$name.jsonl"
done

step "7. score every model on both gold sets, paired against the base"
NAMES=$(IFS=,; echo "${MODELS[*]}")
for task in ag ner; do
  files=()
  for name in "${MODELS[@]}"; do files+=("${task}_$name.jsonl"); done
  sftdata gold score "${task}_gold.parquet" "${files[@]}" --names "$NAMES" --seed 1 \
    --report "${task}_score.json"
done

step "8. one table: each model on both gold sets, and the share of each single fine-tune's gain"
"$PY" "$ROOT/scripts/merge_report.py" ag_score.json accuracy ner_score.json f1 --own ag,ner \
  | tee merging.md
echo "merge example: done in $(( $(date +%s) - START )) s; see $OUT/merging.md" >&2
