"""`python -m stages.export`: the classifier as a SavedModel and as OpenVINO IR, predicting as the .keras does."""
import contextlib
import json
import os
import shutil
import subprocess
import sys

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


def probabilities_of(serving_format: str, folder, images: np.ndarray) -> np.ndarray:
    if serving_format == "savedmodel":
        import tensorflow as tf

        served = tf.saved_model.load(str(folder))  # held: its functions need its variables alive
        return served.serve(images).numpy()
    import openvino

    # f32: on a CPU with bfloat16, OpenVINO would otherwise pick bf16 for speed.
    compiled = openvino.Core().compile_model(str(folder / "cifar10.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled(images)[0]


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


@pytest.mark.parametrize("serving_format", ["savedmodel", "openvino"])
def test_the_exported_model_predicts_what_the_keras_model_predicts(classifier, serving_format, monkeypatch, capsys):
    monkeypatch.chdir(classifier)
    export.main(["--format", serving_format])
    folder = paths.SERVING / serving_format
    assert capsys.readouterr().out.strip() == f"exported models/cifar10.keras as {serving_format} to {folder}"
    assert json.loads((folder / "cifar10.classes.json").read_text()) == ["red", "green", "blue"]
    images = np.random.default_rng(0).integers(0, 256, (6, 40, 48, 3)).astype(np.float32)  # any size
    expected = keras.models.load_model(paths.INFERENCE_MODEL).predict(images, verbose=0)
    computed = probabilities_of(serving_format, folder, images)
    np.testing.assert_allclose(computed, expected, atol=PROBABILITY_TOLERANCE, rtol=0)
    assert np.ptp(expected, axis=0).max() > 1e-3  # the images get different probabilities: a real comparison


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


SMALL_FILE_LIMIT = """
import resource, signal, subprocess, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 1024, resource.RLIM_INFINITY))
sys.exit(subprocess.run([sys.executable, "-m", "stages.export", "--format", sys.argv[1]]).returncode)
"""


@pytest.mark.slow
@pytest.mark.parametrize("serving_format", ["savedmodel", "openvino"])
def test_an_export_that_runs_out_of_room_is_one_line_and_leaves_nothing(classifier, serving_format, tmp_path):
    folder = shutil.copytree(classifier / "models", tmp_path / "models")
    result = subprocess.run([sys.executable, "-c", SMALL_FILE_LIMIT, serving_format], cwd=tmp_path, text=True,
                            capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(("error: [Errno 27] File too large: 'models/serving/", "error: writing models/serving/")), last
    assert [path.name for path in (folder / "serving").iterdir() if path.suffix != ".lock"] == []
