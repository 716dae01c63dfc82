#!/usr/bin/env bash
# The example figure of docs/sfttrain.md "Reading a run": a short real run of SmolLM2-135M-Instruct
# on the first 300 LLaMA-Factory alpaca_en_demo records (../shared/realdata), through the normal
# pipeline, then `sfttrain report` on it. About 10 minutes on a shared 2-core CPU.
# Outputs in report_example_out/; the PNG is copied to docs/img/report_smollm2.png.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${SFT_REALDATA:-$ROOT/../shared/realdata}/datasets/alpaca_format/llamafactory_alpaca_en_demo.json
OUT=$ROOT/report_example_out
rm -rf "$OUT" && mkdir -p "$OUT" && cd "$OUT"
PATH=$ROOT/.venv/bin:$PATH
GGUF=$(bash "$ROOT/scripts/fetch_smollm2.sh")
python - "$GGUF" tok <<'PY'
import os, sys
from transformers import AutoTokenizer
gguf, out = sys.argv[1], sys.argv[2]
AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf)).save_pretrained(out)
PY
python -c "import json, sys; json.dump(json.load(open(sys.argv[1]))[:300], open('head.json', 'w'))" "$DATA"
sftdata convert head.json --from alpaca | sftdata split --ratios train=0.85,val=0.15 -o splits/
{ sftdata convert splits/train.parquet; sftdata convert splits/val.parquet; } \
  | sftdata render-template -t tok | sftdata tokenize -t tok --max-len 256 -o tokens.parquet
sftdata pack tokens.parquet --seq-len 256 -o shards/
sfttrain run shards/ --model "$GGUF" -o run max_steps=40 micro_batch=2 lr=1e-3 eval_every=10 \
  save_every=1000 report_to=tensorboard
sfttrain report run
cp run/report.png "$ROOT/docs/img/report_smollm2.png"
