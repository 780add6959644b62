"""`python -m stages.export`: the classifier as a SavedModel and as OpenVINO IR, predicting as the .keras does."""
import contextlib
import functools
import io
import json
import os
import shutil
import subprocess
import sys

import logging
from pathlib import Path

import keras
import numpy as np
import pytest

from stages import export

from stages.lib import paths
from stages.lib.classifier import save_classifier
from stages.lib.models import build_backbone, build_head, image_model
from tests.helpers import REPO

# float32 throughout; the engines order their sums differently (tests/test_engines_agree.py: features within 1e-4)
PROBABILITY_TOLERANCE = 1e-4


SERVING_GROUP = pytest.mark.xdist_group("serving")  # one worker exports the classifier, once
FORMATS = ["savedmodel", "openvino"]


def probabilities_of(serving_format: str, folder, images: np.ndarray) -> np.ndarray:
    if serving_format == "savedmodel":
        import tensorflow as tf

        served = tf.saved_model.load(str(folder / "1"))  # held: its functions need its variables alive
        return served.signatures["serving_float32"](image=tf.constant(images))["probabilities"].numpy()
    import openvino

    # The export's own hint: on a CPU with bfloat16, OpenVINO would otherwise pick bf16 for speed.
    hint = json.loads(paths.export_record(folder).read_text())["inference_precision_hint"]
    compiled = openvino.Core().compile_model(str(folder / "cifar10.xml"), "CPU", {"INFERENCE_PRECISION_HINT": hint})
    return compiled(images)["probabilities"]


@functools.cache
def keras_model(path: Path) -> keras.Model:
    return keras.models.load_model(path)


def keras_probabilities(images: np.ndarray) -> np.ndarray:
    return keras_model(paths.INFERENCE_MODEL.resolve()).predict(images.astype(np.float32), verbose=0)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A classifier as train saves it, on VGG-16 (few layers: the exporters trace it quickly), its head random."""
    folder = tmp_path_factory.mktemp("classifier")
    keras.utils.set_random_seed(0)
    backbone = build_backbone("vgg16", "none", 32, seed=0)
    head = build_head(backbone.output.shape[-1], 16, 3)
    with contextlib.chdir(folder):
        save_classifier(image_model("vgg16", backbone, 32, head), ["red", "green", "blue"], {"head_layer": head.name})
    return folder


@pytest.fixture(scope="module")
def exported(classifier):
    """The classifier's folder after exporting it in each format, and what each export printed and logged."""
    printed, logged = {}, {}
    export_log = logging.getLogger("export")
    for serving_format in FORMATS:
        with contextlib.chdir(classifier), contextlib.redirect_stdout(io.StringIO()) as stdout, \
                recording(export_log) as records:
            export.main(["--format", serving_format])
        printed[serving_format] = stdout.getvalue()
        logged[serving_format] = [record.getMessage() for record in records]
    return classifier, printed, logged


@contextlib.contextmanager
def recording(logger: logging.Logger):
    """The records `logger` logs at INFO and above in the block, whatever the root logger's level."""
    records, level = [], logger.level
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@SERVING_GROUP
@pytest.mark.parametrize("serving_format", FORMATS)
def test_the_exported_model_predicts_what_the_keras_model_predicts(exported, serving_format, monkeypatch):
    classifier, printed, _ = exported
    monkeypatch.chdir(classifier)
    folder = paths.SERVING / serving_format
    written = folder / "1" if serving_format == "savedmodel" else folder  # TF Serving's folder per version
    assert printed[serving_format].strip() == f"exported models/cifar10.keras as {serving_format} to {written}"
    assert json.loads((folder / "cifar10.classes.json").read_text()) == ["red", "green", "blue"]
    images = np.random.default_rng(0).integers(0, 256, (6, 40, 48, 3)).astype(np.float32)  # any size
    expected = keras_probabilities(images)
    computed = probabilities_of(serving_format, folder, images)
    np.testing.assert_allclose(computed, expected, atol=PROBABILITY_TOLERANCE, rtol=0)
    assert np.ptp(expected, axis=0).max() > 1e-3  # the images get different probabilities: a real comparison


@SERVING_GROUP
def test_the_export_logs_each_phase(exported):
    _, _, logged = exported
    assert logged["savedmodel"] == ["loading models/cifar10.keras",
                                    "writing SavedModel version 1 to models/serving/savedmodel"]
    assert logged["openvino"] == ["loading models/cifar10.keras",
                                  "converting to OpenVINO IR in models/serving/openvino",
                                  "compile it with INFERENCE_PRECISION_HINT f32 (benchmark_app: -infer_precision "
                                  "f32): OpenVINO's default on a CPU with bfloat16 is bf16, less exact"]


@SERVING_GROUP
def test_the_openvino_model_has_one_input_image_and_one_output_probabilities(exported):
    import openvino

    classifier, _, _ = exported
    folder = classifier / paths.SERVING / "openvino"
    model = openvino.Core().read_model(str(folder / "cifar10.xml"))
    assert [port.get_names() for port in model.inputs] == [{"image"}]
    assert [port.get_names() for port in model.outputs] == [{"probabilities"}]
    assert json.loads(paths.export_record(folder).read_text())["inference_precision_hint"] == "f32"


@SERVING_GROUP
def test_the_saved_model_serves_uint8_images_of_any_size_in_tf_servings_layout(exported, monkeypatch):
    import tensorflow as tf

    classifier, _, _ = exported
    monkeypatch.chdir(classifier)
    served = tf.saved_model.load(str(paths.SERVING / "savedmodel/1"))
    serving_default = served.signatures["serving_default"]
    for shape in [(3, 40, 48, 3), (2, 17, 90, 3)]:
        images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        computed = serving_default(image=tf.constant(images))["probabilities"].numpy()
        np.testing.assert_allclose(computed, keras_probabilities(images), atol=PROBABILITY_TOLERANCE, rtol=0)


@pytest.mark.slow
@SERVING_GROUP
def test_saved_model_cli_runs_the_served_model(exported, tmp_path, monkeypatch):
    classifier, _, _ = exported
    monkeypatch.chdir(classifier)
    images = np.random.default_rng(1).integers(0, 256, (2, 36, 36, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run([Path(sys.executable).with_name("saved_model_cli"), "run", "--dir",
                             paths.SERVING / "savedmodel/1", "--tag_set", "serve", "--signature_def",
                             "serving_default", "--inputs", f"image={tmp_path / 'images.npy'}",
                             "--outdir", tmp_path / "out", "--overwrite"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    computed = np.load(tmp_path / "out/probabilities.npy")
    np.testing.assert_allclose(computed, keras_probabilities(images), atol=PROBABILITY_TOLERANCE, rtol=0)


@SERVING_GROUP
def test_a_new_version_of_the_saved_model_keeps_the_earlier_ones(exported, tmp_path, monkeypatch, capsys):
    classifier, _, _ = exported
    monkeypatch.chdir(classifier)
    out = shutil.copytree(paths.SERVING / "savedmodel", tmp_path / "savedmodel")
    export.main(["--format", "savedmodel", "--out", str(out), "--version", "2"])
    assert capsys.readouterr().out.strip() == f"exported models/cifar10.keras as savedmodel to {out}/2"
    assert sorted(path.name for path in out.iterdir()) == ["1", "2", "cifar10.classes.json", "export.json"]
    assert all((out / version / "saved_model.pb").is_file() for version in ("1", "2"))
    assert json.loads(paths.export_record(out).read_text())["version"] == 2


def test_exporting_without_a_model_is_one_line(workdir, capsys):
    with pytest.raises(SystemExit) as exit:
        export.main(["--format", "savedmodel"])
    assert exit.value.code == 1
    assert capsys.readouterr().err.startswith("error: no model at models/cifar10.keras; run `dvc repro` first")
    assert not paths.SERVING.exists()


def test_export_replaces_no_folder_it_did_not_write(workdir, capsys):
    paths.INFERENCE_MODEL.parent.mkdir()
    paths.INFERENCE_MODEL.write_bytes(b"not a model")  # never read: --out is checked first
    (paths.SERVING / "openvino").mkdir(parents=True)
    (paths.SERVING / "openvino/cifar10.xml").write_text("<net/>")
    (workdir / "notes").mkdir()
    (workdir / "notes/plan.txt").write_text("mine")
    before = {path: path.read_bytes() for path in workdir.rglob("*") if path.is_file()}
    for out in ("models", "models/serving", "notes", "notes/plan.txt", "."):
        with pytest.raises(SystemExit) as exit:
            export.main(["--format", "savedmodel", "--out", out])
        assert exit.value.code == 1
        error = capsys.readouterr().err
        assert error.startswith(f"error: --out {out} ") and len(error.splitlines()) == 1, error
    assert {path: path.read_bytes() for path in workdir.rglob("*") if path.is_file()} == before
    # An earlier export's folder is the command's own: it goes on to the model, which fails here.
    paths.export_record(paths.SERVING / "openvino").write_text("{}")
    with pytest.raises(SystemExit):
        export.main(["--format", "openvino"])
    assert capsys.readouterr().err.startswith("error: no class names at models/cifar10.classes.json")


def test_a_version_applies_to_the_saved_model_only(workdir, capsys):
    with pytest.raises(SystemExit) as exit:
        export.main(["--format", "openvino", "--version", "2"])
    assert exit.value.code == 2
    assert "--version applies to --format savedmodel only" in capsys.readouterr().err


SMALL_FILE_LIMIT = """
import resource, signal, subprocess, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 1024, resource.RLIM_INFINITY))
sys.exit(subprocess.run([sys.executable, "-m", "stages.export", "--format", sys.argv[1]]).returncode)
"""


@pytest.mark.slow
@pytest.mark.parametrize("serving_format", ["savedmodel", "openvino"])
def test_an_export_that_runs_out_of_room_is_one_line_and_leaves_nothing(classifier, serving_format, tmp_path):
    folder = shutil.copytree(classifier / "models", tmp_path / "models", ignore=shutil.ignore_patterns("serving"))
    result = subprocess.run([sys.executable, "-c", SMALL_FILE_LIMIT, serving_format], cwd=tmp_path, text=True,
                            capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(("error: [Errno 27] File too large: 'models/serving/", "error: writing models/serving/")), last
    assert "export: loading models/cifar10.keras" in result.stderr.splitlines(), result.stderr[-3000:]
    assert [path.name for path in (folder / "serving").iterdir() if path.suffix != ".lock"] == []
