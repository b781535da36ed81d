#!/usr/bin/env bash
# The GPU check as one command for a machine that has torch, transformers and timm but not prism (e.g. a lent
# H200, which has no package index): prism and its plugins run from this source tree, nothing is installed.
# cattrs and tomli-w are the two pure-Python dependencies such an image lacks; bring them as wheels first:
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl cattrs==26.2.1 tomli-w==1.2.0
# then, on the machine:
#   bash benchmarks/run_gpu_check.sh "$OUT"          # writes $OUT/gpu-check.json, prints every figure
#   bash benchmarks/run_gpu_check.sh /tmp --tiny     # the same on CPU, to check the script
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-.}"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/prism-site .whl/*.whl
  export PYTHONPATH="/tmp/prism-site${PYTHONPATH:+:$PYTHONPATH}"
fi
paths="$PWD"
for plugin in plugins/*/; do paths="$paths:$PWD/${plugin%/}"; done
export PYTHONPATH="$paths${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 benchmarks/gpu_check.py --out "$out/gpu-check.json" "${@:2}"
