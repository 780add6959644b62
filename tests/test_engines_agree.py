"""Extraction engines agree with TensorFlow, and mixed precision stays in the extractor."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from stages import extract

from stages.lib import paths
from stages.lib import engine_choice, tf_engines
from stages.lib.engine_choice import cpu_has_bfloat16, resolve
from stages.lib.engines import gpu_available
from stages.lib.models import build_backbone, image_model
from tests.helpers import SMALL, run_stages, write_params

pytestmark = pytest.mark.xdist_group("engines")  # one worker prepares the small set, once


def test_auto_takes_the_engine_measured_fastest_for_the_device(monkeypatch):
    monkeypatch.setattr(engine_choice, "nvidia_gpu_present", lambda: False)
    assert resolve("auto", "densenet121") == "openvino"
    assert resolve("auto", "convnext_tiny") == "openvino"
    assert resolve("auto", "vgg16") == "tensorflow"  # measured on neither: plain TensorFlow
    assert resolve("xla", "convnext_tiny") == "xla"  # a named engine is never replaced
    monkeypatch.setattr(engine_choice, "nvidia_gpu_present", lambda: True)
    monkeypatch.setattr(engine_choice, "jax_has_cuda", lambda: False)
    assert resolve("auto", "densenet121") == "tensorflow"
    monkeypatch.setattr(engine_choice, "jax_has_cuda", lambda: True)
    assert resolve("auto", "densenet121") == "jax"
    monkeypatch.setattr(engine_choice, "nvidia_gpu_present", lambda: False)
    monkeypatch.setattr(engine_choice, "installed", lambda module: module != "tensorflow")
    assert resolve("auto", "vgg16") == "jax"  # the only engine there is


@pytest.mark.slow
def test_openvino_converts_a_graph_holding_the_weights_as_constants():
    # OpenVINO's front end converts variables slowly (stages/lib/tf_engines.py): none may be left.
    extractor = image_model("densenet121", build_backbone("densenet121", "none", 32, seed=0), 32)
    graph = tf_engines.frozen_graph(extractor)
    assert not {node.op for node in graph.node} & {"VarHandleOp", "ReadVariableOp"}
    inputs = [node.name for node in graph.node if node.op == "Placeholder"]
    assert len(inputs) == 1  # the images: no variable captured as an input either

    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    frozen = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(graph, name=""), [])
    features = frozen.prune(f"{inputs[0]}:0", "Identity:0")
    expected = keras.ops.convert_to_numpy(extractor(images, training=False))  # eager: op by op, unfused
    np.testing.assert_allclose(features(tf.constant(images)).numpy(), expected,
                               rtol=0, atol=1e-6 * np.abs(expected).max())


@pytest.mark.slow
def test_xla_and_openvino_features_match_tensorflow(small):
    reference = np.load(paths.features("train"))
    for engine in ("xla", "openvino"):
        write_params(small, {**SMALL, "extract": {**SMALL["extract"], "engine": engine}})
        run_stages(extract)
        relative = np.abs(np.load(paths.features("train")) - reference).max() / np.abs(reference).max()
        assert relative < 1e-4, (engine, relative)


@pytest.mark.slow
def test_mixed_precision_applies_to_the_extractor_alone(small):
    float32 = np.load(paths.features("train"))
    write_params(small, {**SMALL, "extract": {**SMALL["extract"], "precision": "mixed"}})
    if not (cpu_has_bfloat16() or gpu_available()):
        with pytest.raises(ValueError, match="extract.precision: mixed needs a GPU or a CPU with bfloat16"):
            run_stages(extract)
        return
    run_stages(extract)
    relative = np.abs(np.load(paths.features("train")) - float32).max() / np.abs(float32).max()
    assert 1e-5 < relative < 0.05, relative  # computed in bfloat16 (or float16), not float32
    assert keras.mixed_precision.global_policy().name == "float32"  # what train builds next
