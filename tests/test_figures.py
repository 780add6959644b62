"""evaluate's pictures stay quick and legible however many classes a folder dataset has."""
import matplotlib.axes
import numpy as np
import pytest
from PIL import Image

from stages.lib.figures import MAX_LABELLED_CLASSES, plot_confusion


@pytest.mark.parametrize("classes", [10, 1000])
def test_the_confusion_picture_labels_cells_only_while_they_can_be_read(tmp_path, monkeypatch, classes):
    texts = []
    drawn = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text", lambda axes, *args, **kwargs: texts.append(args) or drawn(
        axes, *args, **kwargs))
    counts = np.random.default_rng(0).integers(0, 50, (classes, classes))
    plot_confusion(counts, [f"class_{index}" for index in range(classes)], tmp_path / "confusion.png")
    assert len(texts) == (classes * classes if classes <= MAX_LABELLED_CLASSES else 0)
    assert Image.open(tmp_path / "confusion.png").size == (800, 700)


def test_the_confusion_picture_puts_actual_classes_down_the_side(tmp_path):
    counts = np.zeros((10, 10), int)
    counts[0, 9] = 50  # every image of the first class taken for the last
    plot_confusion(counts, [f"class_{index}" for index in range(10)], tmp_path / "confusion.png")
    red, _, blue = np.moveaxis(np.asarray(Image.open(tmp_path / "confusion.png").convert("RGB"), int), -1, 0)
    rows, columns = np.nonzero((red < 60) & (blue - red > 60))  # the one dark blue cell; text is black
    height, width = red.shape
    assert np.median(rows) < height / 3 and np.median(columns) > width / 2, (np.median(rows), np.median(columns))
