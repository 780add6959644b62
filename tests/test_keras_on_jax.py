"""Keras on JAX beside TensorFlow: the jax engine's features agree with TensorFlow's and repeat their bytes,
predict and evaluate give a TensorFlow-trained model's results, and none of them imports TensorFlow."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from stages import extract, prepare
from stages.lib import paths
from stages.lib.classifier import load_classifier
from stages.lib.prediction import predict
from tests.helpers import run_python, run_stages, write_params

pytestmark = pytest.mark.slow

# The last line a probe prints: which frameworks a process on JAX has no business importing.
LOADED = "print(sorted(m for m in ('tensorflow', 'openvino', 'dvclive') if m in sys.modules))"
JAX = {"extract": {"engine": "jax"}}


def run_on_jax(cwd, code: str) -> list[str]:
    result = run_python(cwd, f"import sys; {code}; {LOADED}", KERAS_BACKEND="jax")
    assert result.returncode == 0, result.stderr[-3000:]
    *printed, loaded = result.stdout.strip().splitlines()
    assert loaded == "[]", f"imported on JAX: {loaded}"
    return printed


def relative_difference(features: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(features - reference).max() / np.abs(reference).max())


def test_jax_features_match_tensorflow_on_a_second_backbone(workdir):
    """`weights: none` draws one random network from model.seed on either backend."""
    few = {"data": {"limit": 30, "val_size": 10}, "model": {"backbone": "resnet50"}}
    write_params(workdir, few)
    run_stages(prepare, extract)
    tensorflow = np.load(paths.features("test"))
    write_params(workdir, {**few, **JAX})
    run_on_jax(workdir, "from stages import extract; extract.main()")
    assert relative_difference(np.load(paths.features("test")), tensorflow) < 1e-4


def test_predict_evaluate_and_extract_on_jax_give_tensorflows_results(evaluated):
    """One process on JAX, as a user's session: predict and evaluate the TensorFlow-trained model, then extract
    with the same params (the model's initialisers compile once, not once per process)."""
    images = evaluated / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate([(32, 32), (40, 56), (90, 30)]):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(images / f"{index}.png")
    model, classes, _ = load_classifier(paths.INFERENCE_MODEL)
    on_tensorflow = predict(model, classes, sorted(images.iterdir()), top_k=len(classes))
    tensorflow_features = np.load(paths.features("train"))  # extracted on TensorFlow with weights: none
    shutil.rmtree(evaluated / "metrics")
    write_params(evaluated, JAX)
    shutil.move(evaluated / "params.yaml", evaluated / "params.jax.yaml")
    write_params(evaluated, {})  # the params the model was trained with

    printed = run_on_jax(evaluated, "from stages import predict, evaluate, extract; import shutil; "
                                    "predict.main(['--json', '--top-k', '10', 'images']); evaluate.main(); "
                                    "shutil.copy('params.jax.yaml', 'params.yaml'); extract.main()")
    on_jax = json.loads("\n".join(printed))
    assert [result["image"] for result in on_jax] == [str(path.relative_to(evaluated)) for path in
                                                      sorted(images.iterdir())]
    for expected, got in zip(on_tensorflow, on_jax):
        expected = {top["class"]: top["probability"] for top in expected["top"]}
        got = {top["class"]: top["probability"] for top in got["top"]}
        assert got.keys() == expected.keys()
        assert max(abs(got[name] - expected[name]) for name in expected) < 1e-5
    check = json.loads(paths.SAVED_MODEL_CHECK.read_text())
    assert check["max_relative_feature_difference"] < 1e-5 and check["flipped"] == 0
    assert json.loads(paths.METRICS_FILE.read_text())["accuracy"] > 0.4

    assert relative_difference(np.load(paths.features("train")), tensorflow_features) < 1e-4
    timing = json.loads(paths.EXTRACT_TIMING.read_text())["extract"]
    assert (timing["engine"], timing["devices"][0][:8]) == ("jax", "CPU with")
    assert json.loads(paths.FEATURES_INFO.read_text())["engine"] == "jax"


def test_a_missing_jax_or_tensorflow_is_one_line_naming_the_fix(evaluated):
    write_params(evaluated, JAX)
    result = run_python(evaluated, "import sys; sys.modules['jax'] = None; from stages import extract; extract.main()")
    assert (result.returncode, result.stderr.strip().splitlines()) == (1, [
        "error: Keras on jax needs jax, which is not installed: pip install jax (jax[cuda13] or jax[cuda12] on an "
        "NVIDIA GPU)"])
    result = run_python(evaluated, "import sys; sys.modules['tensorflow'] = None; from stages import train; train.main()")
    assert (result.returncode, result.stderr.strip().splitlines()) == (1, [
        "error: Keras on tensorflow needs tensorflow, which is not installed: pip install tensorflow "
        "(tensorflow[and-cuda] on an NVIDIA GPU); extract.engine: jax, predict and evaluate also run on JAX "
        "(KERAS_BACKEND=jax)"])
    result = run_python(evaluated, "from stages import export; export.main([])", KERAS_BACKEND="jax")
    assert (result.returncode, result.stderr.strip().splitlines()) == (1, [
        "error: this command needs Keras on TensorFlow, but KERAS_BACKEND is jax; unset it, or use a command that "
        "runs on JAX (extract with extract.engine: jax, predict, evaluate)"])


def test_the_jax_engine_in_a_process_already_on_tensorflow_says_to_run_it_alone(evaluated):
    write_params(evaluated, JAX)
    with pytest.raises(ValueError, match="extract.engine: jax needs Keras on jax, but this process already runs "
                                         "it on tensorflow; run `python -m stages.extract` in a process of its own"):
        run_stages(extract)


def test_a_process_on_jax_started_by_one_keeps_the_xla_flags_that_key_jaxs_cache(tmp_path):
    code = "import os; import stages.lib.frameworks; print(os.environ['XLA_FLAGS'])"
    parent = run_python(tmp_path, code, KERAS_BACKEND="jax", XLA_FLAGS="--xla_cpu_use_thunk_runtime=true")
    child = run_python(tmp_path, code, KERAS_BACKEND="jax", XLA_FLAGS=parent.stdout.strip())
    assert parent.stdout == child.stdout == "--xla_cpu_use_thunk_runtime=true --xla_gpu_deterministic_ops=true\n", \
        parent.stderr[-2000:] + child.stderr[-2000:]


def test_the_gpu_checks_dry_run_passes_on_the_cpu(tmp_path):
    """The Python part of `bash benchmarks/gpu_check.sh --cpu`, smaller: two jax runs write the same bytes.
    80 images fill the engine's batch of 64 at 32x32, as the tiny params' do: one compilation, in the shared
    JAX cache, serves this test and the jax extract of the tiny params above."""
    reference = {"GPU_CHECK_REFERENCE": str(tmp_path / "reference")}
    for step in ("reference", "run"):
        result = run_python(tmp_path, f"from benchmarks.gpu_check import main; import sys; "
                                      f"sys.argv[1:] = ['{step}', '--images', '40', '--image-size', '32']; main()",
                            **reference)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "two float32 runs: byte-identical" in result.stdout
    assert "largest relative difference 0 over 40 images" in result.stdout
    assert result.stdout.strip().endswith("gpu_check: passed")
