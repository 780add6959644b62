"""The images params.yaml names (CIFAR-10, the synthetic set or a folder), as train, val and test splits."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

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
    """Hold `size` images out of `split`, keeping the class proportions; returns (rest, held out)."""
    indices = np.arange(len(split.labels))
    try:
        rest, held = train_test_split(indices, test_size=size, stratify=split.labels, random_state=seed)
    except ValueError as error:  # too few images, or a class with a single one
        raise ValueError(f"{key}: cannot hold {size} of {len(indices)} images out, stratified ({error})") from error
    rest, held = np.sort(rest), np.sort(held)
    return Split(split.images[rest], split.labels[rest]), Split(split.images[held], split.labels[held])


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
