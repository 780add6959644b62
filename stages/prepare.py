"""Stage 1: cache the images resized to data.image_size (uint8) with one-hot labels, per split."""
import logging
from pathlib import Path

import keras
import numpy as np
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from stages import paths
from stages.atomic import atomic_directory, write_json
from stages.cli import run_stage
from stages.datasets import (
    CIFAR10_CLASSES, SYNTHETIC_CLASSES, Split, download_cifar10, read_cifar10, synthetic_split, verify_archive,
)
from stages.params import NUM_CLASSES, TRAIN_SPLIT_SIZE, DataParams, Params

log = logging.getLogger("prepare")

TEST_SPLIT_SIZE = 10_000
RESIZE_CHUNK = 256  # images resized at a time: bounds memory at 224x224 to ~150 MB of float32


def load_source(data: DataParams) -> tuple[Split, Split, tuple[str, ...], str | None]:
    """The train and test splits, class names, and the archive's sha256 (None for synthetic data)."""
    if data.source == "synthetic":
        train_count = min(data.limit or TRAIN_SPLIT_SIZE, TRAIN_SPLIT_SIZE)
        test_count = min(data.limit or TEST_SPLIT_SIZE, TEST_SPLIT_SIZE)
        train, test = synthetic_split(train_count, data.seed, 0), synthetic_split(test_count, data.seed, 1)
        return train, test, SYNTHETIC_CLASSES, None
    archive = Path(data.archive)
    if not archive.is_file():
        download_cifar10(archive)
    checksum = verify_archive(archive, data.verify)
    train, test = read_cifar10(archive)
    return train, test, CIFAR10_CLASSES, checksum


def stratified_split(split: Split, size: int, seed: int) -> tuple[Split, Split]:
    """Hold `size` images out of `split`, keeping the class proportions; returns (rest, held out)."""
    indices = np.arange(len(split.labels))
    rest, held = train_test_split(indices, test_size=size, stratify=split.labels, random_state=seed)
    rest, held = np.sort(rest), np.sort(held)
    return Split(split.images[rest], split.labels[rest]), Split(split.images[held], split.labels[held])


def limit_split(split: Split, limit: int | None, seed: int) -> Split:
    if limit is None or limit >= len(split.labels):
        return split
    return stratified_split(split, limit, seed)[1]


def write_resized(images: np.ndarray, size: int, path: Path) -> None:
    """Resize in chunks straight into a memory-mapped .npy, never holding the split as float32."""
    cache = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(images), size, size, 3))
    # The same layer the saved model uses, so cached and in-model resizing agree.
    resize = keras.layers.Resizing(size, size)
    for start in tqdm(range(0, len(images), RESIZE_CHUNK), desc=f"resize {path.name}", disable=None):
        resized = keras.ops.convert_to_numpy(resize(images[start:start + RESIZE_CHUNK].astype(np.float32)))
        cache[start:start + len(resized)] = np.clip(np.rint(resized), 0, 255)
    cache.flush()
    del cache


def run(params: Params) -> None:
    data = params.data
    train, test, classes, checksum = load_source(data)
    train, test = limit_split(train, data.limit, data.seed), limit_split(test, data.limit, data.seed)
    train, val = stratified_split(train, data.val_size, data.seed)
    splits = dict(zip(paths.SPLITS, (train, val, test)))
    log.info("caching %s at %dx%d: %s", data.source, data.image_size, data.image_size,
             ", ".join(f"{name} {len(split.labels)}" for name, split in splits.items()))
    with atomic_directory(paths.PREPARED) as out:
        for name, split in splits.items():
            write_resized(split.images, data.image_size, paths.images(name, out))
            np.save(paths.labels(name, out), np.eye(NUM_CLASSES, dtype=np.uint8)[split.labels])
        write_json(paths.info(out), {
            "source": data.source,
            "archive_sha256": checksum,
            "classes": list(classes),
            "image_size": data.image_size,
            "counts": {name: int(len(split.labels)) for name, split in splits.items()},
        })


def main() -> None:
    run_stage(run)


if __name__ == "__main__":
    main()
