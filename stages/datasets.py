"""The images prepare reads: the official CIFAR-10 archive, a synthetic stand-in, or a folder.

CIFAR-10 and synthetic splits hold uint8 RGB images (n, 32, 32, 3); a folder split holds the
image files, decoded one by one when they are resized. Labels are integers.
"""
import hashlib
import io
import logging
import pickle
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stages.atomic import atomic_file

log = logging.getLogger("datasets")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
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


class _BatchUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles: allow only what a numpy array needs, so a crafted batch runs no code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol 2 stores bytes when written by Python 3
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_cifar10(archive: Path) -> None:
    log.info("downloading %s to %s", CIFAR10_URL, archive)
    try:
        with urllib.request.urlopen(CIFAR10_URL, timeout=60) as response, atomic_file(archive) as partial:
            with open(partial, "wb") as file:
                shutil.copyfileobj(response, file)
    except OSError as error:
        raise FileNotFoundError(
            f"data.archive: {archive} is missing and downloading {CIFAR10_URL} failed ({error}); "
            f"download it by hand to {archive}, or set data.source: synthetic"
        ) from error


def verify_archive(archive: Path, verify: bool) -> str:
    """Return the archive's sha256; with `verify`, it must be the official one."""
    checksum = sha256_of(archive)
    if checksum == CIFAR10_SHA256:
        return checksum
    if verify:
        raise ValueError(
            f"data.archive: {archive} has sha256 {checksum}, not the official {CIFAR10_SHA256}; "
            f"delete it to download it again, or set data.verify: false to use it anyway"
        )
    log.warning("data.verify is false: using %s (sha256 %s), which is not the official archive", archive, checksum)
    return checksum


def _read_batch(name: str, payload: bytes) -> Split:
    try:
        batch = _BatchUnpickler(io.BytesIO(payload), encoding="bytes").load()
        data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    except (pickle.UnpicklingError, KeyError, TypeError, EOFError, ValueError) as error:
        raise ValueError(f"data.archive: {name} is not a CIFAR-10 batch ({error})") from error
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise ValueError(f"data.archive: {name} holds no uint8 (n, 3072) image array")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or not np.all((labels >= 0) & (labels < 10)):
        raise ValueError(f"data.archive: {name} needs {len(data)} integer labels in 0-9")
    # Rows are channel-planar: 1024 red, then 1024 green, then 1024 blue values.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(np.ascontiguousarray(images), labels.astype(np.int64))


def _check_member(member: tarfile.TarInfo) -> None:
    if member.issym() or member.islnk() or member.name.startswith("/") or ".." in Path(member.name).parts:
        raise ValueError(f"data.archive: refusing unsafe member {member.name!r} (a link, or a path outside the archive)")


def read_cifar10(archive: Path) -> tuple[Split, Split]:
    """Read the train and test splits straight from the python-format tarball."""
    wanted = {f"{CIFAR10_FOLDER}/{name}" for name in (*TRAIN_BATCHES, TEST_BATCH)}
    payloads = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                _check_member(member)
                if member.name in wanted and member.isfile():
                    payloads[member.name.rsplit("/", 1)[1]] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ValueError(f"data.archive: {archive} is not a readable tar.gz archive ({error}); delete it and retry") from error
    missing = sorted(set(TRAIN_BATCHES + (TEST_BATCH,)) - set(payloads))
    if missing:
        raise ValueError(f"data.archive: {archive} lacks {', '.join(missing)} under {CIFAR10_FOLDER}/")
    batches = {name: _read_batch(f"{CIFAR10_FOLDER}/{name}", payload) for name, payload in payloads.items()}
    train = [batches[name] for name in TRAIN_BATCHES]
    train_split = Split(np.concatenate([b.images for b in train]), np.concatenate([b.labels for b in train]))
    return train_split, batches[TEST_BATCH]


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
