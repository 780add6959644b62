#!/usr/bin/env bash
# The GPU check, at most 8 minutes on one NVIDIA GPU: TensorFlow's GPU build, the fast test tier on
# the GPU, then extraction at 224x224 in float32 and mixed precision (python -m benchmarks.gpu_check).
# Without an NVIDIA GPU it runs the same parts on the CPU, small:  bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
failed=0

[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
pip install --quiet --upgrade pip
pip install --quiet -r requirements-dev.txt
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L; then
    pip install --quiet "tensorflow[and-cuda]>=2.20,<2.22"  # the same release range as requirements.txt
    images=5000 workers=6 engines=tensorflow,xla  # 5,000 per split: 10,000 images through extract
else
    echo "no NVIDIA GPU: the CPU-only parts, small"
    images=150 workers=2 engines=tensorflow
fi
export TF_FORCE_GPU_ALLOW_GROWTH=true  # the test workers share one GPU
python -c "import tensorflow as tf; print('TensorFlow', tf.__version__, 'GPUs:', tf.config.list_physical_devices('GPU'))"
echo "install: $((SECONDS - start)) s"

timeout 300 python -m pytest -m "not slow" -n "$workers" -q -p no:randomly --durations=5 || failed=1
echo "fast tier: $((SECONDS - start)) s"

timeout 300 python -m benchmarks.gpu_check --images "$images" --engines "$engines" || failed=1
echo "gpu_check: $((SECONDS - start)) s in all; $([ $failed = 0 ] && echo passed || echo FAILED)"
exit $failed
