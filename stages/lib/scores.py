"""A classifier's scores from its test predictions: the confusion matrix, per-class precision, recall and
F1, and the accuracy's interval.

A few lines of NumPy rather than scikit-learn's: importing sklearn.metrics would add more than a second
to every evaluate (benchmarks/README.md#figures-behind-choices-in-the-code).
"""
import math

import numpy as np

Z = 2  # the accuracy's interval: about 95 %


def confusion_counts(actual: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """counts[a, p]: test images of class a predicted as p."""
    return np.bincount(actual * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def class_scores(counts: np.ndarray, classes: list[str]) -> list[dict]:
    """Precision, recall, F1 and support per class, 0 where a ratio has nothing to divide by (as
    scikit-learn's zero_division=0); records, one per class, as `dvc plots` reads them."""
    hits = np.diag(counts).astype(np.float64)
    support, predicted = counts.sum(1), counts.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(support > 0, hits / support, 0.0)
        f1 = np.where(support + predicted > 0, 2 * hits / (support + predicted), 0.0)
    return [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support)]


def accuracy_interval(accuracy: float, images: int) -> tuple[float, float]:
    """Wilson's score interval of an accuracy measured on `images` test images, at z = Z.

    Unlike accuracy ± Z standard errors, it stays within 0..1 and does not shrink to nothing at an accuracy
    of 0 or 1 (a small, easy test split), where the test split is least sure of it."""
    shrink = 1 + Z ** 2 / images
    centre = (accuracy + Z ** 2 / (2 * images)) / shrink
    half = Z / shrink * math.sqrt(accuracy * (1 - accuracy) / images + Z ** 2 / (4 * images ** 2))
    # It holds the accuracy itself, also after rounding (an error bar must not be negative).
    return max(0.0, min(accuracy, centre - half)), min(1.0, max(accuracy, centre + half))
