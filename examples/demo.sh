#!/usr/bin/env bash
# The promptmill demo: every step on the bundled examples, offline, on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROMPTMILL_DB="${PROMPTMILL_DB:-db/demo/promptmill.db}"
OUT="${OUT:-out/demo}"
rm -rf "$(dirname "$PROMPTMILL_DB")" "$OUT"
mkdir -p "$OUT"

python steps/01_collect.py text examples/prompts/diffusiondb_style.txt examples/prompts/openprompts.txt

echo
echo "Database: $PROMPTMILL_DB"
