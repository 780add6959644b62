"""The images params.yaml names (CIFAR-10, the synthetic set or a folder), as train, val and test splits."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.lib import cifar10, paths
from stages.lib.datasets import SYNTHETIC_CLASSES, Split, read_folder, synthetic_split
from stages.lib.params import TEST_SPLIT_SIZE, TRAIN_SPLIT_SIZE, DataParams


@dataclass(frozen=True)
class Source:
    train: Split
    test: Split | None  # None: hold a test split out of train
    classes: tuple[str, ...]
    archive_sha256: str | None = None
    skipped: tuple[str, ...] = ()


def load_source(data: DataParams) -> Source:
    if data.source == "synthetic":
        train_count = min(data.limit or TRAIN_SPLIT_SIZE, TRAIN_SPLIT_SIZE)
        test_count = min(data.limit or TEST_SPLIT_SIZE, TEST_SPLIT_SIZE)
        return Source(synthetic_split(train_count, data.seed, 0), synthetic_split(test_count, data.seed, 1),
                      SYNTHETIC_CLASSES)
    if data.source == "folder":
        train, test, classes, skipped = read_folder(Path(data.path))
        return Source(train, test, classes, skipped=tuple(skipped))
    archive = cifar10.locate(Path(data.archive))
    checksum = cifar10.verify(archive, data.verify)
    train, test = cifar10.read(archive)
    return Source(train, test, cifar10.CLASSES, checksum)


def stratified_split(split: Split, size: int, seed: int, key: str = "data.val_size") -> tuple[Split, Split]:
    """Hold `size` images out of `split`, keeping the class proportions; returns (rest, held out).

    The images scikit-learn's train_test_split(stratify=labels, random_state=seed) holds out, drawn the same
    way from NumPy's RandomState (whose stream NumPy keeps fixed): the split does not depend on the version of
    scikit-learn, and prepare need not import it, 2 s of each start."""
    classes, class_of, counts = np.unique(split.labels, return_inverse=True, return_counts=True)
    total = len(split.labels)
    fewest = counts.min(initial=total)  # initial: no class at all
    if not len(classes) <= size <= total - len(classes) or fewest < 2:
        raise ValueError(f"{key}: cannot hold {size} of {total} images out, stratified: each side needs an image "
                         f"of each of the {len(classes)} classes, and each class two images (the fewest: {fewest})")
    rng = np.random.RandomState(seed)
    kept = apportioned(counts, total - size, rng)
    held = apportioned(counts - kept, size, rng)
    members = np.split(np.argsort(class_of, kind="stable"), np.cumsum(counts)[:-1])
    rest_indices, held_indices = [], []
    for class_members, class_kept, class_held in zip(members, kept, held):
        shuffled = class_members[rng.permutation(len(class_members))]
        rest_indices.append(shuffled[:class_kept])
        held_indices.append(shuffled[class_kept:class_kept + class_held])
    rest, held_out = np.sort(np.concatenate(rest_indices)), np.sort(np.concatenate(held_indices))
    return Split(split.images[rest], split.labels[rest]), Split(split.images[held_out], split.labels[held_out])


def apportioned(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """`draws` shared out in proportion to `counts`: each its whole share, then one more to the largest
    remainders, ties broken at random."""
    exact = counts / counts.sum() * draws
    shares = np.floor(exact)
    missing = int(draws - shares.sum())
    remainders = exact - shares
    for remainder in np.unique(remainders)[::-1]:
        if missing == 0:
            break
        tied = np.flatnonzero(remainders == remainder)
        chosen = rng.choice(tied, size=min(len(tied), missing), replace=False)
        shares[chosen] += 1
        missing -= len(chosen)
    return shares.astype(int)


def limit_split(split: Split, limit: int | None, seed: int) -> Split:
    if limit is None or limit >= len(split.labels):
        return split
    return stratified_split(split, limit, seed, key="data.limit")[1]


def split_source(source: Source, data: DataParams) -> dict[str, Split]:
    """The source's subset as train, val and test, stratified; test held out of train if it has none."""
    train = limit_split(source.train, data.limit, data.seed)
    if source.test is None:
        train, test = stratified_split(train, data.val_size, data.seed + 1)
    else:
        test = limit_split(source.test, data.limit, data.seed)
    train, val = stratified_split(train, data.val_size, data.seed)
    return dict(zip(paths.SPLITS, (train, val, test)))
