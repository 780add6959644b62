"""The images prepare reads, as splits: a synthetic stand-in for CIFAR-10, or a folder of your own
(stages/cifar10.py reads the official archive).

CIFAR-10 and synthetic splits hold uint8 RGB images (n, 32, 32, 3); a folder split holds the
image files, decoded one by one when they are resized. Labels are integers.
"""
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger("datasets")

SYNTHETIC_CLASSES = tuple(f"pattern_{i}" for i in range(10))
IMAGE_SHAPE = (32, 32, 3)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


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


def read_image(path: Path) -> np.ndarray:
    """Any image file as uint8 RGB (grayscale, palette and alpha are converted), or ValueError naming it."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def _class_files(folder: Path, classes: list[str], skipped: list[str]) -> Split:
    paths, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted(p for p in (folder / name).rglob("*") if p.is_file()):
            try:
                read_image(path)
            except ValueError as error:
                log.warning("skipping %s", error)
                skipped.append(str(path))
                continue
            paths.append(path)
            labels.append(label)
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() == 0:
        raise ValueError(f"data.path: {folder / classes[int(counts.argmin())]} holds no readable image; "
                         f"add images or remove the folder")
    return Split(ImageFiles(tuple(paths)), np.asarray(labels, np.int64))


def read_folder(root: Path) -> tuple[Split, Split | None, tuple[str, ...], list[str]]:
    """train/<class>/* (and test/<class>/* if present): splits, class names, skipped unreadable files."""
    train_folder = root / "train"
    classes = sorted(d.name for d in train_folder.iterdir() if d.is_dir()) if train_folder.is_dir() else []
    if len(classes) < 2:
        raise ValueError(f"data.path: {train_folder} must hold a folder per class (at least two); found {classes}")
    skipped: list[str] = []
    train = _class_files(train_folder, classes, skipped)
    test_folder = root / "test"
    test = None
    if test_folder.is_dir():
        unknown = sorted({d.name for d in test_folder.iterdir() if d.is_dir()} - set(classes))
        if unknown:
            raise ValueError(f"data.path: {test_folder} has classes not in train/: {', '.join(unknown)}")
        test = _class_files(test_folder, classes, skipped)
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
    for start in range(0, count, 5000):  # bounded float memory for the 50,000-image default
        chunk = labels[start:start + 5000]
        colours = tints[chunk] + rng.uniform(-40, 40, size=(len(chunk), 3))
        pixels = colours[:, None, None, :] + 40 * stripes[chunk][..., None]
        pixels += rng.normal(0, 40, size=pixels.shape)
        images[start:start + len(chunk)] = np.clip(np.rint(pixels), 0, 255)
    return Split(images, labels)
