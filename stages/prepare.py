"""Stage 1: cache the images resized to data.image_size (uint8) with one-hot labels, per split."""
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from stages import paths
from stages.atomic import atomic_directory, write_json
from stages.cache import RowWriter
from stages.cli import end_process, run_stage
from stages import cifar10
from stages.datasets import SYNTHETIC_CLASSES, ImageFiles, Split, read_folder, synthetic_split
from stages.images import read_image
from stages.params import TEST_SPLIT_SIZE, TRAIN_SPLIT_SIZE, DataParams, Params
from stages.resizing import resize_bilinear

log = logging.getLogger("prepare")

RESIZE_CHUNK = 32  # images resized at a time: bounds memory at 224x224 to ~20 MB of float32


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


def same_size_batches(chunk: np.ndarray | ImageFiles) -> Iterator[np.ndarray]:
    """An array chunk is one batch; files may differ in size, so each is a batch of one, decoded only
    when its turn comes (one large image in memory at a time)."""
    if isinstance(chunk, ImageFiles):
        return (read_image(path)[None] for path in chunk.paths)
    return iter([chunk])


def write_resized(images: np.ndarray | ImageFiles, size: int, path: Path) -> None:
    """Resize in chunks, each appended to the .npy as it comes, never holding the split as float32."""
    with RowWriter(path, (len(images), size, size, 3), np.uint8) as cache:
        for start in tqdm(range(0, len(images), RESIZE_CHUNK), desc=f"resize {path.name}", disable=None):
            batches = same_size_batches(images[start:start + RESIZE_CHUNK])
            # The saved model's resize layer computes the same floats: cached and in-model resizing agree.
            resized = np.concatenate([resize_bilinear(batch, size, size) for batch in batches])
            cache.append(np.clip(np.rint(resized), 0, 255))


def split_source(source: Source, data: DataParams) -> dict[str, Split]:
    """The source's subset as train, val and test, stratified; test held out of train if it has none."""
    train = limit_split(source.train, data.limit, data.seed)
    if source.test is None:
        train, test = stratified_split(train, data.val_size, data.seed + 1)
    else:
        test = limit_split(source.test, data.limit, data.seed)
    train, val = stratified_split(train, data.val_size, data.seed)
    return dict(zip(paths.SPLITS, (train, val, test)))


def run(params: Params) -> None:
    data = params.data
    source = load_source(data)
    splits = split_source(source, data)
    log.info("caching %s at %dx%d: %s", data.source, data.image_size, data.image_size,
             ", ".join(f"{name} {len(split.labels)}" for name, split in splits.items()))
    with atomic_directory(paths.PREPARED) as out:
        for name, split in splits.items():
            write_resized(split.images, data.image_size, paths.images(name, out))
            np.save(paths.labels(name, out), np.eye(len(source.classes), dtype=np.uint8)[split.labels])
        write_json(paths.info(out), {
            "source": data.source,
            "archive_sha256": source.archive_sha256,
            "skipped_unreadable": list(source.skipped),
            "classes": list(source.classes),
            "image_size": data.image_size,
            "counts": {name: int(len(split.labels)) for name, split in splits.items()},
        })


def main() -> None:
    run_stage(run)


if __name__ == "__main__":
    main()
    end_process()
