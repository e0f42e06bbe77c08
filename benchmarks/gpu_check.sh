#!/usr/bin/env bash
# GPU check of depthcore's engine (no Ray, no MLflow): images/s per architecture at 200x200 with
# mixed precision and channels_last against a bare loop, and peak memory, in at most 5 minutes.
#
#   benchmarks/gpu_check.sh --pack        # here, with network: fetch the pure-Python wheels into gpu_deps/
#   benchmarks/gpu_check.sh --rehearsal   # here, on the CPU: the same steps at a tiny size (a test runs it)
#   benchmarks/gpu_check.sh               # on the GPU machine (no registry; its own Python and torch)
#
# The GPU machine has its own torch but neither segmentation-models-pytorch nor timm: their pure-
# Python wheels travel in gpu_deps/ (a few MiB), are unpacked there with pip --no-index --no-deps,
# and depthcore runs from PYTHONPATH, not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEPS=gpu_deps
MODE=${1:-gpu}

if [[ $MODE == --pack ]]; then
    # The versions pyproject.toml pins; --no-deps: torch and the rest are the GPU machine's own.
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$DEPS" \
        segmentation-models-pytorch==0.6.0 timm==1.0.31
    ls -la "$DEPS"
    exit 0
fi

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
"$PY" - <<'PY'
import importlib.util, sys
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
need = ["numpy", "yaml", "h5py", "scipy", "PIL", "torchvision", "segmentation_models_pytorch", "timm",
        "huggingface_hub", "safetensors"]
print("modules: " + ", ".join(f"{m} {'yes' if importlib.util.find_spec(m) else 'MISSING'}" for m in need))
PY

SITE=$(mktemp -d)
trap 'rm -rf "$SITE"' EXIT
if ! "$PY" -c "import segmentation_models_pytorch, timm" 2>/dev/null; then
    if ls "$DEPS"/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$DEPS"/*.whl
        echo "smp and timm from $DEPS (unpacked into $SITE)"
    else
        echo "error: segmentation_models_pytorch or timm missing and no wheels in $DEPS (run $0 --pack first)" >&2
        exit 2
    fi
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"

if [[ $MODE == --rehearsal ]]; then
    timeout 300 "$PY" benchmarks/gpu_throughput.py --rehearsal
else
    timeout 300 "$PY" benchmarks/gpu_throughput.py
fi
