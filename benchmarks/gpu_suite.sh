#!/usr/bin/env bash
# The GPU checks, prepared to run in one go on one CUDA machine (at most 7m35s of stage limits on an H200).
#
#   benchmarks/gpu_suite.sh --fetch-wheels      # here, with PyPI: download what the GPU machine lacks into .whl/
#   benchmarks/gpu_suite.sh                     # there: install .whl/ into a temp site, run every stage
#   benchmarks/gpu_suite.sh --dry-run           # anywhere: the same stages at smoke size on the CPU
#
# Stages (each with its own time limit; a stage whose libraries are missing is SKIPPED and says why):
#   generate        benchmarks/generate_bench.py: SD2's full-size architecture, random weights, fp16; the origin
#                   scripts' one-prompt-at-a-time loop against promptmill's batched path at 512 and 768 px
#   generate-fast   the same at 512 and 768 px with --compile and --channels-last
#   wd14            benchmarks/caption_bench.py: the WD14-shaped tagger (448x448x3 -> 6,000 tags) and a small BLIP;
#                   onnxruntime says which provider ran (CUDA only with onnxruntime-gpu installed)
#   minilm          all-MiniLM-L6-v2's architecture (random weights) embedding 20,000 prompts on CUDA, fp16
#   ray-generate    `promptmill generate diffusers --engine ray` with the tiny pipeline; every row must say cuda
# Every stage's output goes to $OUT (default ./gpu-suite-out) and one line per stage to results.tsv; the
# script exits 1 when a stage FAILED (SKIPPED is not a failure; the summary lists both).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
OUT="${OUT:-$ROOT/gpu-suite-out}"
WHEELS="$ROOT/.whl"
DRY=0
FETCH=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --fetch-wheels) FETCH=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_suite: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

# diffusers is pure Python; of its needs only importlib_metadata is missing from the GPU image (torch,
# transformers, sentence-transformers, onnxruntime, pyarrow, click, tqdm and pillow are there). Ray's wheel
# (about 80 MB) is over what one call may carry, so ray-generate runs only where Ray is installed.
CARRIED=("diffusers==0.42.1" "importlib_metadata==8.7.1")
if [ "$FETCH" = 1 ]; then
  mkdir -p "$WHEELS"
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform any -d "$WHEELS" "${CARRIED[@]}" || exit 1
  ls -la "$WHEELS"
  exit 0
fi

mkdir -p "$OUT"
: > "$OUT/results.tsv"
log() { echo "[gpu_suite $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/suite.log"; }

if [ "$DRY" = 0 ] && compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-suite-site \
    "$WHEELS"/*.whl || { log "installing the carried wheels failed"; exit 1; }
  export PYTHONPATH="/tmp/gpu-suite-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT/lib:$ROOT/examples${PYTHONPATH:+:$PYTHONPATH}"
export PROMPTMILL_PROGRESS=0 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# Preflight: the machine, the libraries, CUDA (required unless --dry-run).
"$PY" - "$DRY" > "$OUT/machine.txt" 2>&1 <<'EOF'
import importlib, platform, sys
dry = sys.argv[1] == "1"
print("python", platform.python_version(), platform.machine())
for name in ("torch", "diffusers", "transformers", "onnxruntime", "sentence_transformers", "pyarrow", "ray"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as exc:  # report, the stages decide
        print(name, "MISSING", type(exc).__name__)
import torch
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
elif not dry:
    sys.exit("no CUDA device: run with --dry-run on a machine without one")
EOF
status=$?
cat "$OUT/machine.txt" | tee -a "$OUT/suite.log"
[ $status = 0 ] || { log "preflight failed"; exit 1; }

has() { "$PY" -c "import $1" > /dev/null 2>&1; }

stage() {  # stage NAME LIMIT_SECONDS NEEDS COMMAND...
  local name="$1" limit="$2" needs="$3"; shift 3
  for module in $needs; do
    if ! has "$module"; then
      log "$name: SKIPPED ($module not installed)"
      printf '%s\tSKIPPED\t0\t%s missing\n' "$name" "$module" >> "$OUT/results.tsv"
      return 0
    fi
  done
  log "$name: $*"
  local started=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$? took=$((SECONDS - started))
  tail -n 5 "$OUT/$name.log" | sed "s/^/    /" | tee -a "$OUT/suite.log"
  if [ $rc = 0 ]; then
    printf '%s\tOK\t%s\t%s\n' "$name" "$took" "$(grep -v '^{' "$OUT/$name.log" | tail -n 1)" >> "$OUT/results.tsv"
    log "$name: OK in ${took}s"
  else
    printf '%s\tFAILED\t%s\texit %s\n' "$name" "$took" "$rc" >> "$OUT/results.tsv"
    log "$name: FAILED (exit $rc after ${took}s; $OUT/$name.log)"
  fi
}

if [ "$DRY" = 1 ]; then
  stage generate 300 "diffusers" "$PY" "$ROOT/benchmarks/generate_bench.py" --quick
  stage generate-fast 300 "diffusers" "$PY" "$ROOT/benchmarks/generate_bench.py" --quick --channels-last
  stage wd14 300 "onnxruntime transformers" "$PY" "$ROOT/benchmarks/caption_bench.py" --quick
  MINILM_TEXTS=64
  RAY_PROMPTS=4
else
  stage generate 110 "diffusers" "$PY" "$ROOT/benchmarks/generate_bench.py" --sizes 512,768 --prompts 32 --steps 30
  stage generate-fast 150 "diffusers" "$PY" "$ROOT/benchmarks/generate_bench.py" --sizes 512,768 --prompts 16 \
    --steps 30 --compile --channels-last
  stage wd14 60 "onnxruntime transformers" "$PY" "$ROOT/benchmarks/caption_bench.py"
  MINILM_TEXTS=20000
  RAY_PROMPTS=16
fi

stage minilm 45 "transformers" "$PY" - "$MINILM_TEXTS" "$DRY" <<'EOF'
"""all-MiniLM-L6-v2's architecture (6 layers, 384 wide) with random weights: texts/s on CUDA in fp16."""
import sys, time
import torch
from transformers import BertConfig, BertModel

count, dry = int(sys.argv[1]), sys.argv[2] == "1"
device = "cuda" if torch.cuda.is_available() and not dry else "cpu"
dtype = torch.float16 if device == "cuda" else torch.float32
config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=1536, max_position_embeddings=512)
model = BertModel(config).to(device, dtype).eval()
batch, length = 256, 48
ids = torch.randint(1000, 30000, (count, length), device=device)
mask = torch.ones_like(ids)
with torch.inference_mode():
    model(input_ids=ids[:batch], attention_mask=mask[:batch])
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for start in range(0, count, batch):
        hidden = model(input_ids=ids[start:start + batch], attention_mask=mask[start:start + batch]).last_hidden_state
        vectors = torch.nn.functional.normalize(hidden.mean(dim=1).float(), dim=-1)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
assert vectors.shape[1] == 384 and torch.isfinite(vectors).all()
peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
print(f"minilm-shaped on {device} ({dtype}): {count / seconds:,.0f} texts/s ({length} tokens, batch {batch}), "
      f"peak GPU memory {peak:.1f} GiB")
EOF

stage ray-generate 90 "ray diffusers" "$PY" - "$RAY_PROMPTS" "$DRY" "$OUT" <<'EOF'
"""--engine ray on this machine's GPU: one actor with one GPU; every generation row must name a CUDA device."""
import sqlite3, sys, time
from pathlib import Path
from click.testing import CliRunner
import ray
from promptmill.cli import promptmill
from tiny_models import build_all

count, dry, out = int(sys.argv[1]), sys.argv[2] == "1", Path(sys.argv[3]) / "ray-work"
ray.init(num_cpus=4, num_gpus=0 if dry else 1, include_dashboard=False, log_to_driver=False)
model = build_all(out / "models", ["tiny-sd"])["tiny-sd"]
prompts = out / "prompts.txt"
prompts.write_text("\n".join(f"a lighthouse at dusk, study {i}" for i in range(count)) + "\n")
db = out / "db" / "p.db"

def run(*args):
    result = CliRunner().invoke(promptmill, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output

run("collect", "text", "--db", db, prompts)
started = time.perf_counter()
print(run("generate", "diffusers", "--db", db, "--model", model, "--steps", 4, "--width", 64, "--height", 64,
          "--batch-size", 4, "--engine", "ray", "--dtype", "fp32" if dry else "fp16").strip())
seconds = time.perf_counter() - started
with sqlite3.connect(db) as conn:
    devices = [d for (d,) in conn.execute("SELECT device FROM generations")]
assert len(devices) == count, devices
assert dry or all(d.startswith("cuda") for d in devices), devices
print(f"ray-generate: {count} images on {devices[0]} in {seconds:.1f} s (Ray start and the actor's model load included)")
EOF

log "summary:"
column -t -s $'\t' "$OUT/results.tsv" | tee -a "$OUT/suite.log"
! grep -q $'\tFAILED\t' "$OUT/results.tsv"
