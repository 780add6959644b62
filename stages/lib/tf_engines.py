"""The engines on TensorFlow: the frozen extractor traced by tf.function (`tensorflow`), compiled by XLA
(`xla`), or converted for OpenVINO (`openvino`)."""
import tempfile
from pathlib import Path

from stages.lib.frameworks import keras, tf


def input_signature(extractor: keras.Model) -> tf.TensorSpec:
    return tf.TensorSpec((None, *extractor.input.shape[1:]), tf.uint8)


def compile_tf(extractor: keras.Model, engine: str, precision: str):
    if engine == "openvino":
        return compile_openvino(extractor, precision)
    if tf.config.list_physical_devices("GPU"):
        tf.config.experimental.enable_op_determinism()  # a GPU's reductions: same images, same bytes
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


def compile_openvino(extractor: keras.Model, precision: str):
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
