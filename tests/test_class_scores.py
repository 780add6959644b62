"""evaluate's per-class scores, computed with NumPy, are scikit-learn's."""
import numpy as np
import pytest
from sklearn.metrics import classification_report, confusion_matrix

from stages.lib.scores import class_scores, confusion_counts

CLASSES = ["cat", "dog", "ship", "truck"]


@pytest.mark.parametrize("seed", range(3))
def test_scores_per_class_are_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    actual = rng.integers(0, 3, 200)  # "truck" never occurs: its recall has nothing to divide by
    predicted = np.where(rng.random(200) < 0.6, actual, rng.integers(0, 4, 200))
    predicted[predicted == 2] = 1  # "ship" is never predicted: its precision has nothing to divide by
    counts = confusion_counts(actual, predicted, len(CLASSES))
    np.testing.assert_array_equal(counts, confusion_matrix(actual, predicted, labels=range(len(CLASSES))))
    expected = classification_report(actual, predicted, labels=range(len(CLASSES)), target_names=CLASSES,
                                      output_dict=True, zero_division=0)
    scores = class_scores(counts, CLASSES)
    assert [row["class"] for row in scores] == CLASSES
    for row in scores:
        reference = expected[row["class"]]
        assert row["support"] == reference["support"]
        for ours, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert row[ours] == pytest.approx(reference[theirs], abs=1e-12), (row, reference)
    macro_f1 = np.mean([row["f1"] for row in scores])
    assert macro_f1 == pytest.approx(expected["macro avg"]["f1-score"], abs=1e-12)
