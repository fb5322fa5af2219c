#!/usr/bin/env bash
# The prepared GPU benchmark: our training step against the reference, in one call.
#
# Prepare first, on the development machine: `bash benchmarks/prepare_gpu.sh` (wheels and the
# reference copied into the git-ignored .gpu/). Then, with the device tool:
#   run(command="bash benchmarks/gpu_bench.sh", carry=[".gpu"], timeout_s=540)
# It stops starting stages after BUDGET_S seconds (default 450) and writes, under $OUT:
#   log.txt           everything printed
#   bench_all.json    every stage's full report, merged (re-written after each stage)
#   summary.md        the NOTES.md table
#   profile.txt       top ops of our small and the reference small step (eager, input A)
#   ablation.json     small-model variants (no modulator, no RoPE, LayerNorm, GELU, ...) timed
#                     round-robin against the reference (benchmarks/ablation.py)
#   ref_vivit_bench.json  the reference script's own table (if time is left for it)
# A CPU dry run of the mechanics: SMOKE=1 bash benchmarks/gpu_bench.sh (tiny sizes, no compile).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-/tmp/vivit_bench_out}
BUDGET_S=${BUDGET_S:-450}
PY=${PYTHON:-python3}
START=$(date +%s)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1

# --- environment --------------------------------------------------------------------------------
if compgen -G ".gpu/whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/vivit_site .gpu/whl/*.whl || { echo "wheel install failed"; exit 3; }
  export PYTHONPATH=/tmp/vivit_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
REF=${REF:-.gpu/ref_vivit_bench.py}
[ -f "$REF" ] || REF=../shared/reference/ref_vivit_bench.py
[ -f "$REF" ] || { echo "no reference benchmark: run benchmarks/prepare_gpu.sh first"; exit 3; }
STAGES=/tmp/vivit_bench_stages
rm -rf "$STAGES" && mkdir -p "$STAGES"

date -u +"date %Y-%m-%dT%H:%M:%SZ"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>/dev/null || echo "no nvidia-smi"
"$PY" - <<'EOF' || { echo "preflight failed"; exit 3; }
import importlib, sys
import torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available() and torch.cuda.get_device_name())
for name in ("pydantic", "typer", "rich", "einops", "h5py", "yaml", "numpy"):
    m = importlib.import_module(name)
    print(" ", name, getattr(m, "__version__", getattr(m, "VERSION", "?")))
try:
    import flash_attn
    print("  flash_attn", flash_attn.__version__)
except Exception as e:  # optional
    print("  flash_attn not available:", type(e).__name__)
import vivit_hpo.bench.command  # noqa: F401  (the whole bench path imports)
EOF

# --- stages -------------------------------------------------------------------------------------
SMALL=configs/vivit_small.yaml
BASE=configs/vivit_baseline.yaml
if [ "${SMOKE:-0}" = 1 ]; then
  DEV=cpu; A=(--input 8 16 16 --batch 2); B=(--input 7 13 13 --batch 2); ABL_ROUNDS=4
  TIME=(--steps 2 --warmup 1)
  SHRINK=(--set model.core.embed_dim=32 --set model.core.num_heads=2
          --set model.core.num_spatial_blocks=1 --set model.core.num_temporal_blocks=1)
else
  DEV=cuda; A=(--input 32 64 64 --batch 64); B=(--input 25 51 51 --batch 64)
  TIME=(--steps 20 --warmup 5); SHRINK=()
fi
COMMON=(--device "$DEV" --units 256 --behavior 2 "${TIME[@]}" "${SHRINK[@]}")
REFARGS=(--reference --reference-path "$REF")

summarize() {
  "$PY" -m vivit_hpo.bench.summary "$STAGES" --json "$OUT/bench_all.json" \
    --markdown "$OUT/summary.md" >/dev/null || echo "summary failed"
}

# stage NAME MIN_SECONDS ARGS...: runs only if MIN_SECONDS are left, under a timeout.
stage() {
  local name=$1 need=$2; shift 2
  local left=$((START + BUDGET_S - $(date +%s)))
  if [ "$left" -lt "$need" ]; then
    echo "SKIPPED $name: ${left}s left, needs ${need}s"
    return
  fi
  echo; echo "== $name ($(( $(date +%s) - START ))s in, limit ${left}s): $*"
  local t0=$(date +%s)
  timeout --signal=INT --kill-after=15 "$left" \
    "$PY" -m vivit_hpo.bench step "$@" "${COMMON[@]}" --json "$STAGES/$name.json"
  echo "== $name rc=$? in $(( $(date +%s) - t0 ))s"
  summarize
}

# In order of what the issue needs most: the eager pair against the reference with a profile,
# then compiled (ours; the compiled reference costs another compile, its figure comes from
# its own script at the end), then the recordings' input, then SDPA kernel pins.
stage eager_A 45 --model "$SMALL" --model "$BASE" "${A[@]}" "${REFARGS[@]}" --profile 3
left=$((START + BUDGET_S - $(date +%s)))
if [ "$left" -ge 60 ]; then
  echo; echo "== ablation (small, input A, round-robin against the reference; limit ${left}s)"
  t0=$(date +%s)
  timeout --signal=INT --kill-after=15 "$left" "$PY" benchmarks/ablation.py --device "$DEV" \
    "${A[@]}" --rounds "${ABL_ROUNDS:-12}" --warmup 3 --reference-path "$REF" \
    --json "$OUT/ablation.json"
  echo "== ablation rc=$? in $(( $(date +%s) - t0 ))s"
else
  echo "SKIPPED ablation: ${left}s left"
fi
stage compiled_small_A 100 --model "$SMALL" "${A[@]}" --compile
stage compiled_baseline_A 120 --model "$BASE" "${A[@]}" --compile
stage eager_B 45 --model "$SMALL" --model "$BASE" "${B[@]}" "${REFARGS[@]}"
stage compiled_small_B 100 --model "$SMALL" "${B[@]}" --compile
stage compiled_baseline_B 120 --model "$BASE" "${B[@]}" --compile
if [ "$DEV" = cuda ]; then
  for pin in sdpa-cudnn sdpa-efficient sdpa-flash; do
    stage "pin_${pin}_small_A" 30 --model "$SMALL" "${A[@]}" "${REFARGS[@]}" --backend "$pin"
  done
fi

"$PY" - "$STAGES/eager_A.json" > "$OUT/profile.txt" <<'EOF' || true
import json, sys
report = json.load(open(sys.argv[1]))
for row in report["results"]:
    for key in ("ours_profile", "reference_profile"):
        if row.get(key):
            print(f"### {row['config']} {key} ({row[key]['steps']} steps, sorted by {row[key]['sort']})")
            print(row[key]["table"])
EOF

# The reference's own script (SDPA backends, compiled, large) at input A, if time is left.
left=$((START + BUDGET_S - $(date +%s)))
if [ "$DEV" = cuda ] && [ "$left" -ge 170 ]; then
  echo; echo "== reference script, SHAPE=32,64,64 BATCH=64 (limit ${left}s)"
  SHAPE=32,64,64 BATCH=64 timeout --signal=INT --kill-after=15 "$left" "$PY" "$REF" "$OUT"
  echo "== reference script rc=$?"
else
  echo "SKIPPED reference script: ${left}s left (needs 170s) or no CUDA"
fi

summarize
echo; echo "total $(( $(date +%s) - START ))s"; echo
cat "$OUT/summary.md" 2>/dev/null
