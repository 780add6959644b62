"""Extraction engines agree with TensorFlow, and sharded extraction merges to the same bytes as one process."""
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from stages import extract, prepare, shards

from stages.lib import paths
from stages.lib import engine_choice, tf_engines
from stages.lib.engine_choice import cpu_has_bfloat16, resolve
from stages.lib.engines import gpu_available
from stages.lib.models import build_backbone, image_model
from stages.lib.params import load_params
from tests.helpers import run_module, run_stages, write_params

pytestmark = pytest.mark.xdist_group("engines")  # one worker prepares the small set, once

SMALL = {"data": {"limit": 40, "val_size": 10}, "extract": {"batch_size": 16}}  # 80 images, 5 batches


@pytest.fixture(scope="session")
def small_prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    write_params(folder, SMALL)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        run_stages(prepare, extract)
    return folder / "data"


@pytest.fixture
def small(small_prepared, workdir):
    """A workdir with the small prepared set and its TensorFlow features."""
    write_params(workdir, SMALL)
    shutil.copytree(small_prepared, workdir / "data")
    return workdir


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


def extract_both_shards() -> None:
    params = load_params()
    for index in range(2):
        shards.extract_shard(params, index, 2)


@pytest.mark.slow
def test_two_shards_merge_to_the_bytes_of_one_process(small):
    single = {split: paths.features(split).read_bytes() for split in paths.SPLITS}
    shutil.rmtree(paths.FEATURES)
    extract_both_shards()
    merged = run_module("stages.shards", small, "--merge", "2")
    assert merged.returncode == 0, merged.stderr
    assert {split: paths.features(split).read_bytes() for split in paths.SPLITS} == single


def merge_error() -> str:
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        shards.merge_shards(load_params(), 2)
    assert not paths.FEATURES.exists()
    return str(error.value)


@pytest.mark.slow
def test_merging_shards_that_do_not_fit_is_refused(small):
    shutil.rmtree(paths.FEATURES)
    shards.extract_shard(load_params(), 0, 2)
    assert merge_error().startswith("shard 1 of 2 is missing")
    shards.extract_shard(load_params(), 1, 2)

    write_params(small, {**SMALL, "model": {"seed": 7}})  # params.yaml changed after the shards were extracted
    assert "extracted with other seed" in merge_error()
    write_params(small, SMALL)
    info_path, part_path = paths.info(paths.shard(1, 2)), paths.features("test", paths.shard(1, 2))
    info, part = info_path.read_text(), np.load(part_path)

    # 30 + 10 + 40 images in 5 batches of 16: shard 0 holds rows 0-47 of the run, shard 1 starts at test image 8.
    assert json.loads(info)["first_rows"] == {"train": 30, "val": 10, "test": 8}
    info_path.write_text(json.dumps({**json.loads(info), "first_rows": {"train": 30, "val": 10, "test": 7}}))
    assert merge_error().startswith("shard 1 of 2 starts its test rows at 7, not at 8")
    info_path.write_text(info)

    np.save(part_path, part[:-1])
    assert merge_error().startswith("the shards hold 39 test rows, but data/prepared has 40 test images")
    np.save(part_path, part)

    write_params(small, {**SMALL, "extract": {**SMALL["extract"], "engine": "openvino"}})
    assert merge_error().startswith("shards were extracted by the tensorflow engine, but extract.engine is openvino")
    write_params(small, SMALL)
    shards.merge_shards(load_params(), 2)  # what was refused above, put right, merges
    assert np.load(paths.features("test")).shape == (40, 1024)


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
