"""The images prepare reads, as splits: a synthetic stand-in for CIFAR-10, or a folder of your own
(stages/cifar10.py reads the official archive).

CIFAR-10 and synthetic splits hold uint8 RGB images (n, 32, 32, 3); a folder split holds the
image files, decoded one by one when they are resized. Labels are integers.
"""
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from stages.paths import printable

log = logging.getLogger("datasets")

SYNTHETIC_CLASSES = tuple(f"pattern_{i}" for i in range(10))
IMAGE_SHAPE = (32, 32, 3)

# A folder's images: files with these suffixes, in any case, in the folder and its sub-folders.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
# The most pixels one image may decode to: an 8K frame (7680x4320, 33.2M) fits, and on its way to the
# cache such an image takes at most about 0.6 GB (decoded, as RGB, as float32 for resizing). A file that
# claims more is skipped like any unreadable file, however small it is; a JPEG is first decoded reduced.
MAX_PIXELS = 2**25
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


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
    """An image file as uint8 RGB, turned as its EXIF orientation says (as viewers show it), or ValueError.

    Grayscale, palette and alpha are converted; 16-bit grayscale is scaled to 8 bits.
    """
    try:
        if not Path(path).is_file():  # a FIFO or a device: opening it could wait forever
            raise ValueError("not a regular file" if Path(path).exists() else "no such file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS is checked below
            with Image.open(path) as image:
                _reduce_large_jpeg(image)
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ValueError(f"{width}x{height} pixels is more than the {MAX_PIXELS:,} pixels an "
                                     f"image may have here; shrink it")
                return _as_rgb(ImageOps.exif_transpose(image))
    except Image.DecompressionBombError as error:  # PIL's own limit, twice its default warning size
        raise ValueError(f"cannot read image {printable(path)}: it claims more than the {MAX_PIXELS:,} pixels an "
                         f"image may have here; shrink it") from error
    except Exception as error:  # whatever part of the decoder notices a malformed file
        raise ValueError(f"cannot read image {printable(path)}: {printable(error)}") from error


def _reduce_large_jpeg(image: Image.Image) -> None:
    """JPEG decodes at 1/2, 1/4 or 1/8 scale for almost nothing: use it for photos over MAX_PIXELS."""
    width, height = image.size
    if image.format == "JPEG" and width * height > MAX_PIXELS:
        # draft picks the smallest scale at least this size: under half the limit's side, so under the limit.
        shrink = 2 * (width * height / MAX_PIXELS) ** 0.5
        image.draft("RGB", (int(width / shrink) + 1, int(height / shrink) + 1))


def _as_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in SIXTEEN_BIT_MODES:
        # PIL's own conversion clips 16-bit levels at 255 (an almost white image): scale 0-65535 to 0-255.
        levels = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        image = Image.fromarray(((levels * 255 + 32767) // 65535).astype(np.uint8), "L")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def image_files(folder: Path, skipped: list[str] | None = None) -> list[Path]:
    """The image files in `folder` and its sub-folders, sorted; the same rule for datasets and predict.

    Names with an image suffix, in any case; hidden files and folders are left out. Only regular files
    (after following links) are kept: reading a FIFO or a device could wait forever.
    """
    found = []
    for root, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            path = Path(root) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not path.is_file():
                log.warning("skipping %s: not a regular file", printable(path))
                if skipped is not None:
                    skipped.append(str(path))
                continue
            found.append(path)
    return sorted(found)


def _class_files(folder: Path, classes: list[str], skipped: list[str]) -> Split:
    paths, labels = [], []
    for label, name in enumerate(classes):
        for path in image_files(folder / name, skipped):
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
        raise ValueError(f"data.path: {printable(folder / classes[int(counts.argmin())])} holds no readable "
                         f"image; add images (names ending {', '.join(sorted(IMAGE_SUFFIXES))}) or remove the folder")
    return Split(ImageFiles(tuple(paths)), np.asarray(labels, np.int64))


def _class_folders(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def read_folder(root: Path) -> tuple[Split, Split | None, tuple[str, ...], list[str]]:
    """train/<class>/* (and test/<class>/* if present): splits, class names, skipped unreadable files."""
    train_folder = root / "train"
    classes = _class_folders(train_folder) if train_folder.is_dir() else []
    if len(classes) < 2:
        raise ValueError(f"data.path: {printable(train_folder)} must hold a folder per class (at least two); "
                         f"found {[printable(name) for name in classes]}")
    skipped: list[str] = []
    train = _class_files(train_folder, classes, skipped)
    test_folder = root / "test"
    test = None
    if test_folder.is_dir():
        unknown = sorted(set(_class_folders(test_folder)) - set(classes))
        if unknown:
            raise ValueError(f"data.path: {printable(test_folder)} has classes not in train/: "
                             f"{printable(', '.join(unknown))}")
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
