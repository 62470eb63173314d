#!/usr/bin/env bash
# The ONNX inference benchmark (bench/inference.py) on a CUDA machine, three ways, with the
# GPU's utilisation sampled by nvidia-smi during each run:
#
#   gpu-iobinding  --providers cuda  (litegate binds inputs/outputs: IO binding, the default on CUDA)
#   gpu-run        --providers cuda --option io_binding=false  (plain session.run)
#   cpu            --providers cpu
#
# Each run measures litegate batched, litegate unbatched and the hand-written ORT server at
# concurrency 1, 16 and 64 (wrk), plus raw session.run by batch size, with bench/inference.py's
# defaults (servers on core 0, wrk on core 1, intra-op threads 1; pass e.g.
# `--server-cpus 0-7 --intra-op 8` to give the CPU run more cores). Results:
#   bench/.work/gpu-<UTC time>/results.md    the summary table (rows/s, GPU utilisation)
#   bench/.work/gpu-<UTC time>/*.json|*.csv  each run's bench/inference.py output and samples
# and, with --write, the summary is appended to bench/RESULTS.md.
#
# Usage: bench/gpu.sh [--write] [extra bench/inference.py args, e.g. --rounds 1 --seconds 3]
# Takes about 3 x (rounds x 45 s + start-up); `--rounds 1 --seconds 3` fits in ~4 minutes.
#
# Needs onnxruntime-gpu with its CUDA/cuDNN libraries (pip: nvidia-cublas-cu12,
# nvidia-cudnn-cu12, ... matching the onnxruntime-gpu build) and wrk on PATH. Fails loudly
# instead of silently benchmarking the CPU: LITEGATE_STRICT_PROVIDERS=1 makes litegate
# refuse to fall back, and the pre-flight check asserts CUDA is really in use.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WRITE=0
ARGS=()
for a in "$@"; do
  if [[ "$a" == "--write" ]]; then WRITE=1; else ARGS+=("$a"); fi
done

command -v nvidia-smi >/dev/null || { echo "gpu.sh: nvidia-smi not found: no CUDA machine" >&2; exit 2; }
command -v wrk >/dev/null || { echo "gpu.sh: wrk not found (apt-get install wrk)" >&2; exit 2; }
OUT=bench/.work/gpu-$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

"$PY" - <<'PY'
import sys, tempfile, pathlib
sys.path.insert(0, "bench")
import onnxruntime as ort
import inference
print("onnxruntime", ort.__version__, "available:", ort.get_available_providers())
with tempfile.TemporaryDirectory() as tmp:
    model = inference.build_mlp(pathlib.Path(tmp) / "probe.onnx", 1)
    s = ort.InferenceSession(str(model), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    print("probe session providers:", s.get_providers())
    if "CUDAExecutionProvider" not in s.get_providers():
        sys.exit("gpu.sh: CUDAExecutionProvider could not be initialised (CUDA/cuDNN libraries?)")
PY

export LITEGATE_STRICT_PROVIDERS=1
SAMPLER=""
stop_sampler() { [[ -n "$SAMPLER" ]] && kill "$SAMPLER" 2>/dev/null && wait "$SAMPLER" 2>/dev/null; SAMPLER=""; }
trap stop_sampler EXIT

run() {  # LABEL bench/inference.py-args...
  local label=$1; shift
  echo "== $label: bench/inference.py $* ${ARGS[*]}" >&2
  nvidia-smi --query-gpu=utilization.gpu,utilization.memory,memory.used \
    --format=csv,noheader,nounits -lms 200 > "$OUT/smi-$label.csv" &
  SAMPLER=$!
  "$PY" bench/inference.py --targets litegate,litegate-nb,handwritten "$@" "${ARGS[@]}" \
    | tee "$OUT/table-$label.md"
  stop_sampler
  cp bench/.work/inference.json "$OUT/inference-$label.json"
}

run gpu-iobinding --providers cuda
run gpu-run --providers cuda --option io_binding=false
run cpu --providers cpu

"$PY" - "$OUT" "$*" <<'PY' | tee "$OUT/results.md"
import csv, datetime as dt, json, statistics, sys
from pathlib import Path

out, args = Path(sys.argv[1]), sys.argv[2]
labels = ("gpu-iobinding", "gpu-run", "cpu")
gpu = (out / "gpu.txt").read_text().strip()
print(f"### GPU vs CPU, IO binding on/off — {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
print(f"Command: `bench/gpu.sh {args}`  ")
print(f"GPU: {gpu}  ")
print("Model: bench/inference.py's MLP, 1 row per request, `wrk` on /v2 JSON; rows/s are "
      "medians of the rounds. GPU utilisation: nvidia-smi every 200 ms during the whole run "
      "(mean / max, %).\n")
print("| run | c | litegate batched rows/s | p50 / p99 ms | litegate unbatched rows/s "
      "| hand-written rows/s | raw session.run best rows/s (batch) | GPU util mean / max "
      "| answers |")
print("|---|--:|--:|--:|--:|--:|--:|---|---|")
for label in labels:
    data = json.loads((out / f"inference-{label}.json").read_text())
    med, raw = data["median"], {int(k): v for k, v in data["raw"].items()}
    best = max(raw, key=raw.get)
    rows = [r for r in csv.reader((out / f"smi-{label}.csv").read_text().splitlines()) if r]
    util = [float(r[0]) for r in rows if r[0].strip().replace(".", "").isdigit()]
    use = f"{statistics.mean(util):.0f} / {max(util):.0f}" if util else "n/a"
    ok = "ok" if all(data["checks"].values()) else f"WRONG: {data['checks']}"
    for c in (1, 16, 64):
        b = med[f"litegate|{c}"]
        print(f"| {label} | {c} | {b['rows_s']:.0f} | {b['p50_ms']:.2f} / {b['p99_ms']:.2f} "
              f"| {med[f'litegate-nb|{c}']['rows_s']:.0f} "
              f"| {med[f'handwritten|{c}']['rows_s']:.0f} "
              f"| {raw[best]:.0f} ({best}) | {use} | {ok} |")
print("\nLITEGATE_STRICT_PROVIDERS=1 in every run: a CUDA run that fell back to the CPU "
      "would have failed instead of being measured.")
PY

if [[ "$WRITE" == 1 ]]; then
  { echo; cat "$OUT/results.md"; } >> bench/RESULTS.md
  echo "appended $OUT/results.md to bench/RESULTS.md" >&2
fi
echo "results: $OUT/results.md" >&2
