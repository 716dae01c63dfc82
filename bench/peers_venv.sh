#!/usr/bin/env bash
# Prints the python of .venv-peers, creating it first from bench/peers-requirements.txt: the
# dedup peers (rensa, datatrove) live in their own venv so they never enter requirements.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-peers
STAMP=$VENV/.installed-$(sha1sum bench/peers-requirements.txt | cut -c1-12)
if [ ! -f "$STAMP" ]; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install -q --no-deps -r bench/peers-requirements.txt >&2
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
echo "$PWD/$VENV/bin/python"
