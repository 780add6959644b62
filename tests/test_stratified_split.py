"""prepare's stratified split: the images scikit-learn's train_test_split would hold out, without importing it."""
import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from stages.lib.datasets import Split
from stages.lib.sources import stratified_split


def labelled(counts: list[int]) -> Split:
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(len(labels)).shuffle(labels)  # classes interleaved, as in a real source
    return Split(np.arange(len(labels)) * 10, labels)  # an "image" is its index times ten


def test_holds_out_the_images_scikit_learn_holds_out():
    rng = np.random.default_rng(0)
    for case in range(300):
        classes = int(rng.integers(2, 12))
        # Often equal counts: their remainders tie, and the tie is broken by the seeded generator.
        counts = [int(rng.integers(2, 40)) for _ in range(classes)] if case % 2 else [int(rng.integers(2, 40))] * classes
        split = labelled(counts)
        size = int(rng.integers(classes, len(split.labels) - classes + 1))
        seed = int(rng.integers(0, 2**31))
        rest, held = stratified_split(split, size, seed)
        expected_rest, expected_held = train_test_split(np.arange(len(split.labels)), test_size=size,
                                                        stratify=split.labels, random_state=seed)
        assert held.images.tolist() == sorted(expected_held * 10), (counts, size, seed)
        assert rest.images.tolist() == sorted(expected_rest * 10), (counts, size, seed)
        assert (held.labels == split.labels[held.images // 10]).all()


@pytest.mark.parametrize("counts, size", [([5, 5, 5], 2), ([5, 5, 5], 13), ([5, 1, 5], 4), ([], 1)])
def test_an_impossible_split_is_one_line_naming_the_key(counts, size):
    with pytest.raises(ValueError, match=rf"^data.limit: cannot hold {size} of {sum(counts)} images out, stratified: "
                                         rf"each side needs an image of each of the {len(counts)} classes"):
        stratified_split(labelled(counts), size, seed=0, key="data.limit")
