#!/usr/bin/env bash
# The promptmill demo: all nine steps on the bundled examples, offline, on the CPU.
#
# Generation and captioning use tiny randomly initialised models built by
# examples/make_tiny_models.py: the images they make are noise, the captions
# nonsense. Everything else is real. To use real models, pass hub ids instead
# (see the README): --model stabilityai/stable-diffusion-2, Salesforce/blip-image-captioning-large, ...
#
# The LLM steps (04_augment, 07_label describe) run when
# OPENAI_API_KEY or PROMPTMILL_LLM_BASE_URL (an OpenAI-compatible server) is set.
#
# It writes only to its own two folders, db/demo/ and out/demo/ under DEMO_DIR
# (default: the checkout), and clears them first; PROMPTMILL_DB and any other
# database setting of the environment are ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR="${DEMO_DIR:-$PWD}"
export PROMPTMILL_DB="$DEMO_DIR/db/demo/promptmill.db"
OUT="$DEMO_DIR/out/demo"
MODELS=examples/models
rm -rf "$DEMO_DIR/db/demo" "$OUT"
mkdir -p "$OUT"
step() { echo; echo "\$ python steps/$*"; python "steps/$@"; }

# Tiny random models (built once, a few seconds).
[ -d "$MODELS/tiny-sd" ] && [ -d "$MODELS/tiny-blip" ] && [ -d "$MODELS/tiny-wd14" ] && [ -d "$MODELS/tiny-clip" ] \
  || python examples/make_tiny_models.py

# 01 collect: prompt files, Discord exports, image folders, a ZIP.
step 01_collect.py text examples/prompts/diffusiondb_style.txt examples/prompts/openprompts.txt
step 01_collect.py discord examples/discord/dreambot.json --format dreambot
step 01_collect.py discord examples/discord/midjourney.json --format midjourney
step 01_collect.py discord examples/discord/messages.json --format messages
step 01_collect.py imagefolder examples/images
step 01_collect.py imagefolder examples/imagefolder --text-as both
step 01_collect.py zip examples/archives/images.zip

# 02 clean: the image-to-prompt competition's rules; decode every image.
step 02_clean.py prompts --preset kaggle-i2p
step 02_clean.py images --min-side 32

# 03 dedup: exact, simhash and MiniLM semantic duplicates; identical and look-alike images.
step 03_dedup.py prompts --method exact,simhash,semantic
step 03_dedup.py images --method sha256,phash
step 03_dedup.py report

# 04 augment and 07 describe: only with an LLM to talk to.
LLM=""; { [ -n "${OPENAI_API_KEY:-}" ] || [ -n "${PROMPTMILL_LLM_BASE_URL:-}" ]; } && LLM=1
if [ -n "$LLM" ]; then
  base_url=(); [ -n "${PROMPTMILL_LLM_BASE_URL:-}" ] && base_url=(--base-url "$PROMPTMILL_LLM_BASE_URL")
  step 04_augment.py openai "${base_url[@]}" --target 20 --max-cost 0.50
  step 07_label.py describe "${base_url[@]}" --limit 50 --max-cost 0.50
else
  echo
  echo "(skipping 04_augment and 07_label describe: set OPENAI_API_KEY, or PROMPTMILL_LLM_BASE_URL for a vLLM/Ollama server, to run them)"
fi

# 05 generate: 16 images from kept prompts with the tiny pipeline (noise images).
step 05_generate.py diffusers --model "$MODELS/tiny-sd" --steps 4 --width 32 --height 32 --batch-size 8 --limit 16

# 06 caption: BLIP captions, WD14 tags, CLIP scores; then LoRA-style caption edits.
step 06_caption.py blip --model "$MODELS/tiny-blip" --max-length 20
step 06_caption.py wd14 --model "$MODELS/tiny-wd14"
step 06_caption.py clipscore --model "$MODELS/tiny-clip" --min-score 0.1
step 06_caption.py edit --kind wd14 --add-trigger sks --position start --dedup-tags
step 06_caption.py stats --trigger sks

# 07 label: Label Studio tasks with machine predictions.
step 07_label.py ls-export "$OUT/labelstudio/tasks.json"

# 08 split: whole dedup clusters to one split, stable as data grows.
step 08_split.py assign --validation 0.1 --seed 0
step 08_split.py report

# 09 upload: a Hub imagefolder, parquet shards, a kohya folder, prompt lists; check them.
step 09_upload.py imagefolder "$OUT/imagefolder" --release demo --text-from prompt,caption:imported
step 09_upload.py parquet "$OUT/parquet" --release demo-parquet --text-from prompt,caption:imported
step 09_upload.py kohya "$OUT/kohya" --trigger sks --repeats 10 --text-from caption:wd14
step 09_upload.py prompts "$OUT/prompts" --format jsonl
[ -n "$LLM" ] && step 09_upload.py pairs "$OUT/pairs" --format jsonl   # description -> prompt pairs from 07_label
step 09_upload.py check "$OUT/imagefolder"
step 09_upload.py push your-name/promptmill-demo --release demo --dry-run

echo
echo "Done. Look next at:"
echo "  the database:   promptmill browse --db $PROMPTMILL_DB   (Datasette on http://127.0.0.1:8001)"
echo "  the exports:    $OUT/imagefolder  $OUT/parquet  $OUT/kohya  $OUT/prompts"
echo "  the card:       $OUT/imagefolder/README.md"
