"""stages.predict on hostile files: every good image gets its answer, every bad one a line, nothing hangs."""
import json
import os
import subprocess
import sys
import zipfile

import h5py
import keras
import numpy as np
import pytest
from PIL import Image


from stages.lib import paths, prediction
from stages.lib.classifier import load_classifier, save_classifier
from stages.lib.images import read_image
from tests.helpers import REPO, png_claiming, predict_in_process, run_measured, run_module

CLASSES = ["red", "green", "blue"]


def tiny_classifier(seed: int = 0) -> keras.Model:
    """Raw images of any size in, three probabilities out: the interface of the trained classifier."""
    keras.utils.set_random_seed(seed)
    images = keras.Input((None, None, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Resizing(8, 8, name="resize")(images))
    return keras.Model(images, keras.layers.Dense(len(CLASSES), activation="softmax", name="head")(pooled))


@pytest.fixture
def saved(tmp_path, monkeypatch):
    """A classifier saved as train saves one, in tmp_path/models."""
    monkeypatch.chdir(tmp_path)
    save_classifier(tiny_classifier(), CLASSES, {"head_layer": "head", "matches_cached_features": False})
    return tmp_path


def test_bad_files_among_good_ones_each_get_a_line_and_nothing_hangs(saved):
    folder = saved / "photos"
    folder.mkdir()
    Image.fromarray(np.full((12, 12, 3), 200, np.uint8)).save(folder / "a.png")
    os.mkfifo(folder / "b.png")
    (folder / "c.png").write_bytes(png_claiming(60_000, 60_000))
    (folder / "d\nerror: forged line.png").write_bytes(b"not an image")
    Image.fromarray(np.full((12, 12, 3), 20, np.uint8)).save(folder / "e.png")
    result = run_module("stages.predict", saved, str(folder), str(folder / "b.png"), "--json", "--strict", timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    answers = {entry["image"]: entry for entry in json.loads(result.stdout)}
    assert [path for path, entry in answers.items() if "top" in entry] == [str(folder / "a.png"), str(folder / "e.png")]
    assert str(folder / "c.png") in answers and "error" in answers[str(folder / "c.png")]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, result.stderr  # c.png, d...png, and b.png named explicitly
    assert not any(line.startswith("error: forged") for line in result.stderr.splitlines())
    assert f"skipping {folder / 'b.png'}: not a regular file" in result.stderr
    assert any(line.startswith(f"error: cannot read image {folder / 'b.png'}: not a regular file") for line in errors)


def test_a_reader_that_stops_early_ends_predict_quietly(saved):
    """`python -m stages.predict photos/ | head -1`: answers beyond what a pipe holds (64 KiB), read one line."""
    folder = saved / "photos"
    folder.mkdir()
    for index in range(1500):
        Image.fromarray(np.full((4, 4, 3), index % 256, np.uint8)).save(folder / f"{index:04d}.png")
    reading = subprocess.Popen([sys.executable, "-m", "stages.predict", str(folder)], cwd=saved,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    first = reading.stdout.readline()
    reading.stdout.close()
    errors = reading.stderr.read()
    assert reading.wait(timeout=120) == 141, errors  # the shell's status for a command stopped by SIGPIPE
    assert first.startswith(f"{folder / '0000.png'}: ")
    assert "Traceback" not in errors and "BrokenPipeError" not in errors, errors


def test_images_go_in_batches_in_the_order_given_with_the_answers_of_one_at_a_time(saved, monkeypatch):
    rng = np.random.default_rng(0)
    files = []
    for index in range(10):  # three sizes, interleaved
        size = (12, 12) if index % 3 == 0 else (20, 15) if index % 3 == 1 else (9, 31)
        files.append(saved / f"{index}.png")
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(files[-1])
    (saved / "bad.png").write_bytes(b"not an image")
    files.insert(4, saved / "bad.png")
    model, classes, _ = load_classifier(paths.INFERENCE_MODEL)
    calls = []
    monkeypatch.setattr(model, "predict_on_batch", lambda batch: calls.append(len(batch)) or model(batch))
    results = prediction.predict(model, classes, files, top_k=3, batch_size=4)
    # The bad file is skipped, the rest resized to one shape and batched, the last batch padded to that
    # shape: the model is traced once.
    assert calls == [4, 4, 4]
    assert [result["image"] for result in results] == list(map(str, files))
    assert "error" in results[4] and "top" not in results[4]
    for path, result in zip(files, results):
        if path.name == "bad.png":
            continue
        one = model.predict(read_image(path)[None], verbose=0)[0]  # one image at a time, as before
        assert [top["class"] for top in result["top"]] == [classes[i] for i in np.argsort(-one)[:3]]
        np.testing.assert_allclose([top["probability"] for top in result["top"]], np.sort(one)[::-1], atol=1e-6)


def test_unreadable_images_are_skipped_with_a_warning_unless_strict(saved, capsys):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(saved / "good.png")
    (saved / "bad.png").write_bytes(b"not an image")
    status, output, error = predict_in_process(capsys, str(saved / "bad.png"), str(saved / "good.png"))
    assert status == 0 and output.startswith(f"{saved / 'good.png'}: ")
    assert error.startswith(f"warning: cannot read image {saved / 'bad.png'}: ") and error.endswith(" (skipped)\n")
    assert error.count("\n") == 1
    status, _, error = predict_in_process(capsys, str(saved / "bad.png"), str(saved / "good.png"), "--strict")
    assert status == 1 and error.startswith(f"error: cannot read image {saved / 'bad.png'}")


def model_elsewhere(folder, classes=CLASSES):
    """A classifier saved outside models/, with its class names beside it and no record of train's."""
    model_path = folder / "elsewhere" / "classifier.keras"
    model_path.parent.mkdir()
    tiny_classifier().save(model_path)
    paths.classes_beside(model_path).write_text(json.dumps(classes))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "image.png")
    return model_path


def test_class_names_that_do_not_fit_the_model_are_one_line(tmp_path, capsys):
    model_path = model_elsewhere(tmp_path, CLASSES[:2])
    status, _, error = predict_in_process(capsys, str(tmp_path / "image.png"), "--model", str(model_path))
    assert status == 1
    assert error.strip() == (f"error: {paths.classes_beside(model_path)} names 2 classes but {model_path} has 3 "
                             f"outputs; keep the class names saved with the model beside it")


def test_class_names_from_a_file_cannot_forge_lines_or_colour_the_terminal(tmp_path, capsys):
    classes = ["dog\x1b[31mRED", "cat\nerror: forged line", "plain"]
    model_path = model_elsewhere(tmp_path, classes)
    status, output, error = predict_in_process(capsys, str(tmp_path / "image.png"), "--model", str(model_path),
                                               "--top-k", "3")
    assert status == 0 and error == ""
    assert "\x1b" not in output and len(output.splitlines()) == 1, output
    assert "dog\\x1b[31mRED" in output and "cat\\nerror: forged line" in output


@pytest.mark.parametrize("top_k", ["0", "-1", "three"])
def test_a_top_k_that_shows_nothing_is_refused(tmp_path, capsys, top_k):
    status, output, error = predict_in_process(capsys, str(tmp_path / "image.png"), "--top-k", top_k)
    assert status == 2 and output == ""
    assert error.splitlines()[-1].endswith(f"argument --top-k: {top_k!r} is not a count of 1 or more"), error


@pytest.mark.parametrize("record, problem", [
    ("[1, 2]", "not a JSON object"), ('{"head_layer": 7, "files": []}', "wrong head_layer, files"),
    ('{"files": {"cifar10.keras": 5}}', "wrong files"), ("{not json", "is not JSON")])
def test_a_damaged_record_of_the_model_set_is_one_line(saved, capsys, record, problem):
    paths.MODEL_RECORD.write_text(record)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(saved / "image.png")
    status, _, error = predict_in_process(capsys, str(saved / "image.png"))
    assert status == 1 and len(error.splitlines()) == 1, error
    assert error.startswith(f"error: {paths.MODEL_RECORD} ") and problem in error, error


def test_a_missing_image_is_one_line_before_any_model_is_read(tmp_path, capsys):
    damaged = model_elsewhere(tmp_path)
    damaged.write_bytes(b"not a model")  # were it read first, the error would be about the model
    status, _, error = predict_in_process(capsys, str(tmp_path / "image.png"), str(tmp_path / "photo.jpg"),
                                          "--model", str(damaged))
    assert status == 1
    assert error.strip() == f"error: no image at {tmp_path / 'photo.jpg'}"


def with_config(model_path, old: str, new: str) -> None:
    """Rewrite a .keras file's config.json, replacing one string."""
    with zipfile.ZipFile(model_path) as original:
        members = {name: original.read(name) for name in original.namelist()}
    assert old in members["config.json"].decode()
    members["config.json"] = members["config.json"].decode().replace(old, new).encode()
    with zipfile.ZipFile(model_path, "w") as rewritten:
        for name, data in members.items():
            rewritten.writestr(name, data)


@pytest.mark.parametrize("module, name", [("os", "system"), ("subprocess", "Popen")])
def test_a_model_naming_other_code_is_refused_in_one_line(tmp_path, capsys, module, name):
    model_path = model_elsewhere(tmp_path)
    with_config(model_path, '"module": "keras.layers", "class_name": "Dense"',
                f'"module": "{module}", "class_name": "{name}"')
    status, _, error = predict_in_process(capsys, str(tmp_path / "image.png"), "--model", str(model_path))
    assert status == 1 and error.count("\n") == 1
    assert error.strip() == (f"error: {model_path} was refused: not a plain Keras model of this pipeline (it names "
                             f"'{name}', which is not a Keras class)")


def test_an_h5_model_keras_cannot_rebuild_points_to_the_keras_file(tmp_path, capsys):
    # As a ConvNeXt classifier's .h5 is in Keras 3.15: its LayerScale layers are unknown to the legacy loader.
    model_path = model_elsewhere(tmp_path).with_suffix(".h5")
    tiny_classifier().save(model_path)
    with h5py.File(model_path, "r+") as saved:
        config = saved.attrs["model_config"]
        assert '"class_name": "Dense"' in config
        saved.attrs["model_config"] = config.replace('"class_name": "Dense"', '"class_name": "LayerScale"')
    status, _, error = predict_in_process(capsys, str(tmp_path / "image.png"), "--model", str(model_path))
    assert status == 1 and error.count("\n") == 1
    assert error.strip() == (f"error: {model_path} could not be loaded (Keras's loader does not know its layer "
                             f"'LayerScale'): Keras cannot rebuild every model from the legacy .h5 format, "
                             f"ConvNeXt's among them; use the .keras file saved beside it")


def test_a_damaged_model_file_is_named_as_damaged(tmp_path, capsys):
    model_path = model_elsewhere(tmp_path)
    model_path.write_bytes(model_path.read_bytes()[:500])
    status, _, error = predict_in_process(capsys, str(tmp_path / "image.png"), "--model", str(model_path))
    assert status == 1
    assert error.strip() == (f"error: {model_path} is not a .keras file (a zip archive); it is damaged or truncated, "
                             f"save it again")


def test_a_model_set_mixed_by_an_interrupted_train_is_refused(saved):
    """Killed between renames: a new .keras beside the old .h5, class names and record."""
    newer = saved / "newer.keras"
    tiny_classifier(seed=1).save(newer)
    os.replace(newer, paths.INFERENCE_MODEL)
    with pytest.raises(ValueError, match=r"^models/cifar10.keras is not the file models/cifar10.info.json records: "
                                         r"the set comes from two train runs"):
        load_classifier(paths.INFERENCE_MODEL)
    with pytest.raises(ValueError, match=r"^models/cifar10.keras is not the file"):
        load_classifier(paths.LEGACY_MODEL)  # the .h5 itself is whole, but its set is not


def test_the_saved_set_loads_with_its_record(saved):
    model, classes, record = load_classifier(paths.LEGACY_MODEL)
    assert classes == CLASSES and record["head_layer"] == "head"
    assert set(record["files"]) == {"cifar10.keras", "cifar10.h5", "cifar10.classes.json"}
    assert model.predict(np.zeros((1, 20, 30, 3), np.uint8), verbose=0).shape == (1, 3)


def h5_declaring(path, dataset: str, shape: tuple) -> None:
    """Replace a dataset of an .h5 model by one that declares `shape` and holds nothing: the file stays small."""
    with h5py.File(path, "r+") as saved:
        del saved[dataset]
        saved.create_dataset(dataset, shape=shape, dtype="float32", chunks=True)


def model_asking_for_gigabytes(folder, case: str):
    model_path = model_elsewhere(folder)
    if case == "a head of 10**8 units":
        with_config(model_path, '"units": 3,', '"units": 100000000,')
    elif case == "a resize to 12,000 pixels":
        with_config(model_path, '"height": 8, "width": 8,', '"height": 12000, "width": 12000,')
    elif case == "a config of 20 MB":
        with_config(model_path, '"class_name": "Functional",', '"class_name": "Functional",' + " " * 20_000_000)
    else:
        tiny_classifier().save(model_path := model_path.with_suffix(".h5"))
        paths.classes_beside(model_path).write_text(json.dumps(CLASSES))
        h5_declaring(model_path, "model_weights/head/head/kernel", (3, 300_000_000))
    return model_path


# predict's main() on each model in turn, in one process as a server would load them: its exit status each time.
PREDICT_EACH = """
import sys
from stages import predict
image, *models = sys.argv[1:]
for model in models:
    try:
        predict.main([image, "--model", model])
        print(0)
    except SystemExit as exit_:
        print(exit_.code)
"""


def test_model_files_asking_for_gigabytes_are_refused_before_keras_allocates(tmp_path):
    cases = ["a head of 10**8 units", "a resize to 12,000 pixels", "a config of 20 MB", "an .h5 declaring 3.6 GB"]
    models = []
    for index, case in enumerate(cases):
        (folder := tmp_path / str(index)).mkdir()
        models.append(str(model_asking_for_gigabytes(folder, case)))
    result, seconds, peak = run_measured(tmp_path, "-c", PREDICT_EACH, str(tmp_path / "0/image.png"), *models)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stdout.split() == ["1"] * len(cases), result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(models), result.stderr[-3000:]
    for error, model in zip(errors, models):
        assert error.startswith(f"error: {model}"), error[:1000]
    assert seconds < 60 and peak < 1.5 * 2**30, (seconds, peak / 2**20)
