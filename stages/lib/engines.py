"""Extraction engines: one frozen feature extractor, run by TensorFlow, by TensorFlow with XLA, or by OpenVINO.

Which is fastest depends on the backbone and the device, so it is measured (python -m benchmarks.run),
not guessed: `extract.engine: auto` takes the backbone's measured CPU engine from the registry, and plain
TensorFlow on a GPU, where nothing else has been measured yet.
"""
import re
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stages.lib.backbones import BACKBONES
from stages.lib.frameworks import keras, tf

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


def input_signature(extractor: keras.Model) -> tf.TensorSpec:
    return tf.TensorSpec((None, *extractor.input.shape[1:]), tf.uint8)


def compile_engine(extractor: keras.Model, engine: str, precision: str) -> Engine:
    """A callable for fixed-size batches; `engine` is resolved (not auto)."""
    if engine == "openvino":
        return compile_openvino(extractor, precision)
    traced = tf.function(lambda batch: tf.cast(extractor(batch, training=False), tf.float32),
                         input_signature=[input_signature(extractor)], jit_compile=engine == "xla")
    return lambda batch: traced(batch).numpy()


def frozen_graph(extractor: keras.Model) -> tf.compat.v1.GraphDef:
    """The extractor as a TensorFlow graph holding its weights as constants."""
    trainable = [keras.ops.convert_to_numpy(weight) for weight in extractor.trainable_variables]
    non_trainable = [keras.ops.convert_to_numpy(weight) for weight in extractor.non_trainable_variables]

    @tf.function(input_signature=[input_signature(extractor)], autograph=False)
    def features(batch):
        computed, _ = extractor.stateless_call([tf.constant(value) for value in trainable],
                                               [tf.constant(value) for value in non_trainable], batch, training=False)
        return tf.cast(computed, tf.float32)

    return features.get_concrete_function().graph.as_graph_def()


def compile_openvino(extractor: keras.Model, precision: str) -> Engine:
    import openvino  # only this engine needs it

    # OpenVINO's TensorFlow front end reads a frozen graph from a file in C++, several times faster than
    # it walks a tf.function's graph in Python, for the same features bit for bit
    # (benchmarks/README.md#figures-behind-choices-in-the-code).
    with tempfile.TemporaryDirectory(prefix="openvino-") as folder:
        graph_file = Path(folder) / "extractor.pb"
        graph_file.write_bytes(frozen_graph(extractor).SerializeToString())
        converted = openvino.convert_model(graph_file)
    hint = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "mixed" else "f32"}
    compiled = openvino.Core().compile_model(converted, "CPU", hint)
    return lambda batch: compiled(batch)[0]
