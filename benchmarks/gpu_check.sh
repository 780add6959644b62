#!/usr/bin/env bash
# The GPU check, for a GPU machine with no network and no TensorFlow: Python 3.12 with JAX (CUDA), PyTorch and
# torchvision. Keras and the little else the stages need travel as wheels (benchmarks/gpu_wheels.txt).
#   bash benchmarks/gpu_check.sh --fetch   here, with pip's index: the wheels into .whl/, the reference into .gpu_check/
#   bash benchmarks/gpu_check.sh           there, carrying .whl and .gpu_check: one call of at most 8 minutes
#   bash benchmarks/gpu_check.sh --cpu     here: the same steps on the CPU, small, in a venv without TensorFlow
set -euo pipefail
cd "$(dirname "$0")/.."
images=5000 size=224  # 5,000 per split: over 10,000 images through extract

case "${1:-}" in
--fetch)
    rm -rf .whl && python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl -r benchmarks/gpu_wheels.txt
    python -m benchmarks.gpu_check reference --images "$images" --image-size "$size"
    du -sh .whl .gpu_check
    ;;
--cpu)
    images=40 size=64
    venv=$(mktemp -d)/venv
    python3 -m venv "$venv" && . "$venv/bin/activate"
    pip install --quiet -r benchmarks/gpu_wheels.txt "jax[cpu]" numpy pyyaml pillow h5py tqdm filelock ml_dtypes scikit-learn
    python -c "import importlib.util as u; assert not u.find_spec('tensorflow'); print('no TensorFlow here')"
    python -m benchmarks.gpu_check reference --images "$images" --image-size "$size"
    python -m benchmarks.gpu_check run --images "$images" --image-size "$size"
    ;;
*)
    start=$SECONDS
    python3 -m pip install --quiet --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    nvidia-smi -L
    python3 -c "import jax; print('JAX', jax.__version__, jax.devices())"
    timeout 420 python3 -m benchmarks.gpu_check run --images "$images" --image-size "$size"
    echo "gpu_check.sh: $((SECONDS - start)) s"
    ;;
esac
