#!/usr/bin/env bash
# Several trials on one GPU: aggregate training throughput of K concurrent bench processes.
# PREPARED, NOT YET MEASURED on a GPU (see benchmarks/NOTES.md, "Several trials on one GPU").
#
#   KS="1 2 3 4" CONFIG=configs/vivit_small.yaml bash benchmarks/multi_trial.sh
#
# For each K it starts K `python -m vivit_hpo.bench step` processes at once (same config, input and
# batch; each its own model and CUDA context, as K Optuna workers would be), waits for all, and
# reports: the sum of their samples/s, each one's samples/s, and how much their timed windows
# overlapped (the sum only means something when the windows overlap almost fully; the long
# --steps make the compile/warm-up skew small next to the window). Writes $OUT/multi_trial.json.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/vivit_multi_out}
PY=${PYTHON:-python3}
KS=${KS:-"1 2 3 4"}
CONFIG=${CONFIG:-configs/vivit_small.yaml}
DEV=${DEV:-cuda}
ARGS=${ARGS:-"--input 32 64 64 --batch 64 --steps 200 --warmup 10"}
mkdir -p "$OUT"
if compgen -G ".gpu/whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/vivit_site .gpu/whl/*.whl || exit 3
  export PYTHONPATH=/tmp/vivit_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
RUNS=/tmp/vivit_multi_runs
rm -rf "$RUNS" && mkdir -p "$RUNS"
for k in $KS; do
  pids=()
  for i in $(seq 1 "$k"); do
    # shellcheck disable=SC2086
    "$PY" -m vivit_hpo.bench step --model "$CONFIG" --device "$DEV" $ARGS \
      --json "$RUNS/k${k}_${i}.json" > "$RUNS/k${k}_${i}.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || echo "K=$k: a process failed (see $RUNS/k${k}_*.log)"; done
  echo "K=$k done"
done
"$PY" - "$RUNS" "$OUT/multi_trial.json" <<'EOF'
import collections, json, pathlib, sys
runs, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
by_k = collections.defaultdict(list)
for f in sorted(runs.glob("k*_*.json")):
    k = int(f.name[1:].split("_")[0])
    ours = json.loads(f.read_text())["results"][0]["ours"]
    by_k[k].append(ours)
rows = []
for k, procs in sorted(by_k.items()):
    starts = [p["window_unix"][0] for p in procs]
    ends = [p["window_unix"][1] for p in procs]
    overlap = max(0.0, min(ends) - max(starts)) / max(e - s for s, e in zip(starts, ends))
    rows.append({
        "k": k, "processes": len(procs),
        "aggregate_samples_per_s": sum(p["samples_per_s"] for p in procs),
        "per_process_samples_per_s": [p["samples_per_s"] for p in procs],
        "peak_memory_mb_sum": sum(p["peak_memory_mb"] for p in procs),
        "window_overlap": overlap,
    })
base = rows[0]["aggregate_samples_per_s"] if rows and rows[0]["k"] == 1 else None
print("| K | aggregate samples/s | vs K=1 | per process | peak memory sum GiB | window overlap |")
print("| ---: | ---: | ---: | --- | ---: | ---: |")
for r in rows:
    gain = f"{r['aggregate_samples_per_s'] / base:.2f}x" if base else "-"
    per = ", ".join(f"{x:.0f}" for x in r["per_process_samples_per_s"])
    print(f"| {r['k']} | {r['aggregate_samples_per_s']:.0f} | {gain} | {per} | "
          f"{r['peak_memory_mb_sum'] / 1024:.1f} | {r['window_overlap']:.0%} |")
out.write_text(json.dumps(rows, indent=1))
EOF
