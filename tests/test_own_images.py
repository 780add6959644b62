"""Your own images: a folder dataset through every stage, then stages.predict on image files."""
import contextlib
import json
import logging

import numpy as np
import pytest
import yaml
from PIL import Image

from stages import evaluate, extract, prepare, train
from tests.helpers import REPO, predict_in_process, run_stages, write_params

pytestmark = pytest.mark.xdist_group("folder")  # one worker runs the shared fixture once

COLOURS = {"blue": (30, 40, 200), "green": (30, 190, 40), "red": (210, 30, 30)}
MODES = ["RGB", "L", "RGBA", "P"]  # the image modes people's folders hold


def draw(rng, colour, size) -> Image.Image:
    pixels = np.clip(np.asarray(colour) + rng.normal(0, 15, size=(size[1], size[0], 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def write_dataset(root, rng, per_class: dict[str, int]) -> None:
    for split, count in per_class.items():
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                image = draw(rng, colour, (int(rng.integers(20, 64)), int(rng.integers(20, 64))))
                mode = MODES[index % len(MODES)]
                suffix = ".jpg" if index % 5 == 4 else ".png"
                (image if suffix == ".jpg" else image.convert(mode)).save(folder / f"{name}_{index}{suffix}")


class Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="session")
def folder_run(tmp_path_factory):
    """A three-class folder dataset with one corrupt file, run through every stage once for this module."""
    tmp_path = tmp_path_factory.mktemp("folder")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_bytes((REPO / "dvc.yaml").read_bytes())
    images = tmp_path / "images"
    write_dataset(images, np.random.default_rng(0), {"train": 24, "test": 6})
    corrupt = images / "train" / "red" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a png")
    # 66 training images, three steps an epoch: 10 epochs reach 16 of the 18 test images, as 30 did.
    write_params(repo, {"data": {"source": "folder", "path": str(images), "val_size": 6, "limit": None},
                        "train": {"epochs": 10}})
    warnings = Messages()
    logging.getLogger().addHandler(warnings)
    try:
        with contextlib.chdir(repo):
            run_stages(prepare, extract, train, evaluate)
    finally:
        logging.getLogger().removeHandler(warnings)
    return repo, images, corrupt, "\n".join(warnings.lines)


def test_a_folder_dataset_runs_end_to_end(folder_run):
    repo, _, corrupt, log = folder_run
    info = json.loads((repo / "data/prepared/info.json").read_text())
    assert info["classes"] == ["blue", "green", "red"]
    assert info["skipped_unreadable"] == [str(corrupt)]
    assert str(corrupt) in log  # reported by path while it ran
    assert info["counts"] == {"train": 66, "val": 6, "test": 18}  # 72 readable train images, 6 held out
    per_class = json.loads((repo / "metrics/per_class.json").read_text())
    assert [row["class"] for row in per_class] == ["blue", "green", "red"]
    metrics = json.loads((repo / "metrics/metrics.json").read_text())
    assert metrics["accuracy"] > 0.6, metrics  # chance is 1/3
    # evaluate loaded the model with them, and refuses a model whose outputs are not one per class name
    assert json.loads((repo / "models/cifar10.classes.json").read_text()) == ["blue", "green", "red"]

    declared = yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]
    for name in ("confusion_matrix.png", "mistakes.png"):
        assert f"metrics/{name}" in declared
        with Image.open(repo / "metrics" / name) as picture:
            picture.verify()
        with Image.open(repo / "metrics" / name) as picture:
            assert picture.format == "PNG" and min(picture.size) >= 200


def test_predict_names_the_class_of_new_images(folder_run, tmp_path, monkeypatch, capsys):
    repo, _, _, _ = folder_run
    rng = np.random.default_rng(1)
    new = tmp_path / "new"
    new.mkdir()
    draw(rng, COLOURS["red"], (40, 30)).save(new / "red.png")
    draw(rng, COLOURS["blue"], (50, 50)).save(new / "blue.jpg")
    monkeypatch.chdir(repo)
    status, output, _ = predict_in_process(capsys, str(new / "red.png"), str(new / "blue.jpg"), "--json")
    assert status == 0
    predictions = {p["image"]: p["top"] for p in json.loads(output)}
    assert predictions[str(new / "red.png")][0]["class"] == "red"
    assert predictions[str(new / "blue.jpg")][0]["class"] == "blue"
    assert len(predictions[str(new / "red.png")]) == 3
    assert abs(sum(top["probability"] for top in predictions[str(new / "red.png")]) - 1) < 1e-4
    # Unreadable files, folders and --strict: test_predict_hostile_files.py, on a small model that loads at once.
    status, _, error = predict_in_process(capsys, str(new / "red.png"), "--model", str(tmp_path / "absent.keras"))
    assert status == 1 and error.strip() == f"error: no model at {tmp_path / 'absent.keras'}; run `dvc repro` first, " \
        "or pass --model PATH"
