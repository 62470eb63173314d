#!/usr/bin/env bash
# Run the ONNX inference benchmark (bench/inference.py) on a CUDA machine and record
# the providers actually used. Usage: bench/gpu.sh [extra bench/inference.py args]
#
# Needs onnxruntime-gpu with its CUDA/cuDNN libraries (pip: nvidia-cublas, nvidia-cudnn,
# ... matching the onnxruntime-gpu build) and wrk on PATH. Fails loudly instead of
# silently benchmarking the CPU: LITEGATE_STRICT_PROVIDERS=1 makes litegate refuse to
# fall back, and the pre-flight check below asserts CUDA is really in use.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

command -v nvidia-smi >/dev/null || { echo "gpu.sh: nvidia-smi not found: no CUDA machine" >&2; exit 2; }
command -v wrk >/dev/null || { echo "gpu.sh: wrk not found (apt-get install wrk)" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

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
exec "$PY" bench/inference.py --providers cuda --write "$@"
