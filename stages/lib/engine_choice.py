"""Which engine extracts, decided before any ML framework is imported: Keras runs on one backend per process,
chosen when it is first imported, and the engine decides which (JAX for `jax`, TensorFlow for the others)."""
import glob
import importlib.util
import os
import re
import sys
from pathlib import Path

from stages.lib.backbones import BACKBONES
from stages.lib.params import ENGINE_BACKENDS


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def nvidia_gpu_present() -> bool:
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def jax_has_cuda() -> bool:
    return installed("jax_cuda13_plugin") or installed("jax_cuda12_plugin")


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags, as Linux names them; none known elsewhere."""
    try:
        flags = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        return set()
    return set(flags[1].split()) if flags else set()


def cpu_has_bfloat16() -> bool:
    """AVX512-BF16 or AMX: without them bfloat16 is emulated, slower than float32."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve(engine: str, backbone: str) -> str:
    """A named engine as it is; `auto` as the fastest installed one for the device found: on a CPU the
    backbone's measured engine (benchmarks/README.md#choosing-the-cpu-engine-per-backbone), on an NVIDIA GPU
    JAX where it has CUDA (the whole network compiled by XLA), and JAX wherever TensorFlow is missing."""
    if engine != "auto":
        return engine
    gpu = nvidia_gpu_present()
    if (gpu and jax_has_cuda()) or not installed("tensorflow"):
        return "jax"
    return "tensorflow" if gpu else BACKBONES[backbone].cpu_engine


def use_backend_of(engine: str) -> None:
    """Make Keras, when it is imported next, run on the backend `engine` needs."""
    wanted = ENGINE_BACKENDS[engine]
    if "keras" in sys.modules and (running := sys.modules["keras"].backend.backend()) != wanted:
        raise ValueError(f"extract.engine: {engine} needs Keras on {wanted}, but this process already runs it on "
                         f"{running}; run `python -m stages.extract` in a process of its own")
    os.environ["KERAS_BACKEND"] = wanted
