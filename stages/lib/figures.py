"""The two pictures evaluate draws beside its metrics: the confusion matrix and the most confident mistakes."""
from pathlib import Path

import matplotlib
import numpy as np

from stages.lib import paths

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


# Past this many classes a count per cell and a name per tick are too small to read, and drawing them grew
# with the square of the classes: minutes for a thousand.
MAX_LABELLED_CLASSES = 30


def plot_confusion(counts: np.ndarray, classes: list[str], target: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 7))
    shown = axes.imshow(counts, cmap="Blues")
    if len(classes) <= MAX_LABELLED_CLASSES:
        dark = counts.max() / 2  # dark cells get white numbers
        for (actual, predicted), count in np.ndenumerate(counts):
            axes.text(predicted, actual, str(count), ha="center", va="center",
                      color="white" if count > dark else "black")
        ticks = range(len(classes))
        axes.set_xticks(ticks, classes, rotation=45, ha="right")
        axes.set_yticks(ticks, classes)
    else:
        figure.colorbar(shown, ax=axes, label="test images")
    axes.set_xlabel("Predicted label")
    axes.set_ylabel("True label")
    axes.set_title("Test-split confusion matrix (counts)")
    figure.tight_layout()
    figure.savefig(target, format="png", dpi=100)
    plt.close(figure)


def plot_mistakes(probabilities: np.ndarray, actual: np.ndarray, classes: list[str], target: Path,
                  count: int = 16) -> None:
    """The most confident wrong predictions on the test split, as a grid of images."""
    predicted, confidence = probabilities.argmax(1), probabilities.max(1)
    wrong = np.flatnonzero(predicted != actual)
    worst = wrong[np.argsort(-confidence[wrong])][:count]
    images = np.load(paths.images("test"), mmap_mode="r")
    columns = 4
    rows = max(1, -(-len(worst) // columns))
    tile_width, tile_height, picture, heading = 2.6, 2.9, 2.2, 0.5  # inches
    figure = plt.figure(figsize=(columns * tile_width, rows * tile_height + heading))
    # One axes in tile units, row 0 at the top, rather than an axes per picture: half the time to lay out
    # and save, and no title runs into a picture.
    axes = figure.add_axes((0, 0, 1, rows * tile_height / (rows * tile_height + heading)))
    axes.set(xlim=(0, columns), ylim=(rows, 0))
    axes.axis("off")
    width, height = picture / tile_width, picture / tile_height
    for place, index in enumerate(worst):
        row, column = divmod(place, columns)
        left, top = column + (1 - width) / 2, row + 0.97 - height
        axes.imshow(images[index], extent=(left, left + width, top + height, top), aspect="auto")
        axes.text(column + 0.5, top - 0.02, f"true: {classes[actual[index]]}\npredicted: {classes[predicted[index]]}\n"
                  f"p = {confidence[index]:.2f}", fontsize=8, ha="center", va="bottom")
    if not len(worst):
        axes.text(columns / 2, 0.5, "no mistakes on the test split", ha="center", va="center")
    figure.suptitle("Most confident mistakes (test split)")
    figure.savefig(target, format="png", dpi=100)
    plt.close(figure)
