"""The images prepare reads, as splits: a synthetic stand-in for CIFAR-10, or a folder of your own
(cifar10.py reads the official archive).

CIFAR-10 and synthetic splits hold uint8 RGB images (n, 32, 32, 3); a folder split holds the
image files, decoded one by one when they are resized. Labels are integers.
"""
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.lib.images import IMAGE_SUFFIXES, image_files, read_image
from stages.lib.quoting import shown

log = logging.getLogger("datasets")

SYNTHETIC_CLASSES = tuple(f"pattern_{i}" for i in range(10))
IMAGE_SHAPE = (32, 32, 3)


@dataclass(frozen=True)
class ImageFiles:
    """Image files of any size and mode, indexed like an array and decoded to RGB on demand."""

    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> "ImageFiles":
        if isinstance(index, slice):
            return ImageFiles(self.paths[index])
        return ImageFiles(tuple(self.paths[i] for i in index))

    def decode(self) -> list[np.ndarray]:
        return [read_image(path) for path in self.paths]


@dataclass(frozen=True)
class Split:
    images: np.ndarray | ImageFiles  # uint8 (n, 32, 32, 3) RGB, or files
    labels: np.ndarray  # int64 (n,)


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _class_files(folder: Path, classes: list[str], skipped: list[str], root: Path, owners: dict) -> Split:
    """A split's readable images and labels; `owners` maps each file taken so far, and each file's bytes, to
    the path it came by: a link to a file already taken is refused, a copy of one reported."""
    paths, labels = [], []
    for label, name in enumerate(classes):
        for path in image_files(folder / name, skipped):
            if not _inside(path, root):
                log.warning("skipping %s: a link to a file outside data.path", shown(path))
                skipped.append(str(path))
                continue
            if (owner := owners.setdefault(path.resolve(), path)) != path:
                raise ValueError(f"data.path: {shown(path)} and {shown(owner)} are one file (through a link); an "
                                 f"image belongs to one class of one split")
            try:
                # Decoded here to leave unreadable files out before the split, and again when resized; a JPEG
                # at 1/8 scale, a fraction of the work (benchmarks/README.md#figures-behind-choices-in-the-code).
                read_image(path, reduced=True)
            except ValueError as error:
                log.warning("skipping %s", error)
                skipped.append(str(path))
                continue
            with open(path, "rb") as file:
                digest = hashlib.file_digest(file, "sha256").digest()
            if (original := owners.setdefault(digest, path)) != path:
                log.warning("%s holds the same bytes as %s: one image in two places (two classes, or train and "
                            "test?)", shown(path), shown(original))
            paths.append(path)
            labels.append(label)
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() == 0:
        raise ValueError(f"data.path: {shown(folder / classes[int(counts.argmin())])} holds no readable "
                         f"image; add images (names ending {', '.join(sorted(IMAGE_SUFFIXES))}) or remove the folder")
    return Split(ImageFiles(tuple(paths)), np.asarray(labels, np.int64))


def _class_folders(folder: Path, root: Path) -> list[str]:
    """The class folders, refusing one that links out of data.path: walking it could take a whole disk."""
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    for name in names:
        if not _inside(folder / name, root):
            raise ValueError(f"data.path: {shown(folder / name)} links to {shown((folder / name).resolve())}, "
                             f"outside {shown(root)}; copy or move the images in")
    return names


def read_folder(root: Path) -> tuple[Split, Split | None, tuple[str, ...], list[str]]:
    """train/<class>/* (and test/<class>/* if present): splits, class names, skipped unreadable files."""
    train_folder = root / "train"
    classes = _class_folders(train_folder, root) if train_folder.is_dir() else []
    if len(classes) < 2:
        raise ValueError(f"data.path: {shown(train_folder)} must hold a folder per class (at least two); "
                         f"found {shown(classes)}")
    skipped: list[str] = []
    owners: dict[Path, Path] = {}
    train = _class_files(train_folder, classes, skipped, root, owners)
    test_folder = root / "test"
    test = None
    if test_folder.is_dir():
        unknown = sorted(set(_class_folders(test_folder, root)) - set(classes))
        if unknown:
            raise ValueError(f"data.path: {shown(test_folder)} has classes not in train/: "
                             f"{shown(unknown)}")
        test = _class_files(test_folder, classes, skipped, root, owners)
    return train, test, tuple(classes), skipped


def synthetic_split(count: int, seed: int, split_index: int) -> Split:
    """A learnable, CIFAR-shaped split: each class a tint and a stripe direction, under noise.

    The tint alone separates most classes through a frozen random backbone; the stripes leave
    room for fine-tuning to do better.
    """
    rng = np.random.default_rng([seed, split_index])
    labels = np.arange(count) % 10
    rng.shuffle(labels)
    tints = 127 + np.random.default_rng(seed).uniform(-60, 60, size=(10, 3))
    angles = np.linspace(0, np.pi, 10, endpoint=False)
    rows, cols = np.mgrid[0:32, 0:32]
    stripes = np.stack([np.sin((np.cos(a) * rows + np.sin(a) * cols) * 0.6) for a in angles])  # (10, 32, 32)
    images = np.empty((count, *IMAGE_SHAPE), np.uint8)
    # Random numbers are drawn in chunks of 5,000 images, colours then noise: the order that defines the
    # dataset. The noise is drawn 500 images at a time, the same stream, so float64 temporaries stay near 25 MB.
    for start in range(0, count, 5000):
        chunk = labels[start:start + 5000]
        colours = tints[chunk] + rng.uniform(-40, 40, size=(len(chunk), 3))
        for offset in range(0, len(chunk), 500):
            block = slice(offset, offset + 500)
            pixels = colours[block, None, None, :] + 40 * stripes[chunk[block]][..., None]
            pixels += rng.normal(0, 40, size=pixels.shape)
            images[start + offset:start + offset + len(pixels)] = np.clip(np.rint(pixels), 0, 255)
    return Split(images, labels)
