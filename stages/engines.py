"""Extraction engines: one frozen feature extractor, run by TensorFlow, by TensorFlow with XLA, or by OpenVINO.

Which is fastest depends on the backbone and the device, so it is measured (python -m benchmarks.run),
not guessed: `extract.engine: auto` takes the backbone's measured CPU engine from the registry, and plain
TensorFlow on a GPU, where nothing else has been measured yet.
"""
import re
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from stages.backbones import BACKBONES

Engine = Callable[[np.ndarray], np.ndarray]  # a batch of uint8 images in, float32 features out


def gpu_available() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def cpu_has_bfloat16() -> bool:
    """AVX512-BF16 or AMX: without them bfloat16 is emulated, slower than float32."""
    try:
        cpu = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", cpu) is not None


def resolve(engine: str, backbone: str) -> str:
    if engine != "auto":
        return engine
    if gpu_available():
        return "tensorflow"
    return BACKBONES[backbone].cpu_engine


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
        keras.mixed_precision.set_global_policy("mixed_float16" if gpu_available() else "mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def compile_engine(extractor: keras.Model, engine: str, precision: str) -> Engine:
    """A callable for fixed-size batches; `engine` is resolved (not auto)."""
    signature = tf.TensorSpec((None, *extractor.input.shape[1:]), tf.uint8)
    traced = tf.function(lambda batch: tf.cast(extractor(batch, training=False), tf.float32),
                         input_signature=[signature], jit_compile=engine == "xla")
    if engine != "openvino":
        return lambda batch: traced(batch).numpy()
    import openvino  # only this engine needs it

    converted = openvino.convert_model(traced.get_concrete_function())
    hint = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "mixed" else "f32"}
    compiled = openvino.Core().compile_model(converted, "CPU", hint)
    return lambda batch: compiled(batch)[0]
