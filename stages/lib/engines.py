"""Extraction engines: one frozen feature extractor, run by TensorFlow, by TensorFlow with XLA, by OpenVINO,
or by Keras's JAX backend.

Which is fastest depends on the backbone and the device, so it is measured (python -m benchmarks.run),
not guessed: stages/lib/engine_choice.py resolves `extract.engine: auto`. Only the chosen engine's framework
is imported: a process on JAX never imports TensorFlow.
"""
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np

from stages.lib.engine_choice import cpu_flags, cpu_has_bfloat16
from stages.lib.frameworks import BACKEND, keras

Engine = Callable[[np.ndarray], np.ndarray]  # a batch of uint8 images in, float32 features out
CPU_FEATURES = {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"}  # pick kernels


def gpu_name() -> str | None:
    """The GPU Keras's backend computes on, or None on a CPU."""
    if BACKEND == "jax":
        import jax
        return jax.devices()[0].device_kind if jax.default_backend() == "gpu" else None
    from stages.lib.frameworks import tf
    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "unnamed") if gpus else None


def gpu_available() -> bool:
    """Whether Keras's backend computes on a GPU in this process."""
    return gpu_name() is not None


def device() -> str:
    """What decides an engine's bytes besides its inputs: the GPU, or the CPU's kernels' instructions."""
    if name := gpu_name():
        return f"GPU {name}"
    return f"CPU with {' '.join(sorted(cpu_flags() & CPU_FEATURES)) or 'none of ' + ' '.join(sorted(CPU_FEATURES))}"


def share_threads(threads: int) -> None:
    """A worker process computing as another with `threads` threads does: XLA's CPU kernels split work by
    the thread count, and so round differently. TensorFlow also takes a GPU's memory as it needs it."""
    if BACKEND == "jax":
        return  # XLA's CPU client takes its thread count from the process's CPUs, which Ray pins alike
    from stages.lib.frameworks import tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def mixed_policy(engine: str) -> str:
    """bfloat16 on a CPU, and with JAX on a GPU too; float16 with TensorFlow on a GPU."""
    return "mixed_float16" if engine != "jax" and gpu_available() else "mixed_bfloat16"


@contextmanager
def precision_policy(precision: str, engine: str):
    """Keras's dtype policy while the extractor is built (OpenVINO takes its own hint instead).

    Layers keep the policy they were built with; the global one is put back, so a model built
    later in the same process (train's, evaluate's) stays float32.
    """
    if precision == "mixed" and not (gpu_available() or cpu_has_bfloat16()):
        raise ValueError(
            "extract.precision: mixed needs a GPU or a CPU with bfloat16 instructions (AVX512-BF16 or AMX) "
            "and this machine has neither; set it to float32"
        )
    previous = keras.mixed_precision.global_policy()
    if precision == "mixed" and engine != "openvino":
        keras.mixed_precision.set_global_policy(mixed_policy(engine))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def compile_engine(extractor: keras.Model, engine: str, precision: str) -> Engine:
    """A callable for fixed-size batches; `engine` is resolved (not auto), and Keras runs on its backend."""
    if engine == "jax":
        from stages.lib.jax_engine import compile_jax
        return compile_jax(extractor, precision)
    from stages.lib.tf_engines import compile_tf
    return compile_tf(extractor, engine, precision)
