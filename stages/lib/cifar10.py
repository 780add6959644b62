"""The official CIFAR-10 archive: downloaded, checked against its sha256, and read without extracting.

Its batches are pickles and the archive a tarball: both are read as untrusted input.
"""
import io
import logging
import os
import pickle
import tarfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stages.lib.atomic import atomic_file, exclusive, sha256_of
from stages.lib.datasets import Split
from stages.lib.params import OFFLINE_RUN
from stages.lib.quoting import shown

log = logging.getLogger("cifar10")

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
# A batch of 10,000 images pickles to 31 MB: what a member or an array in one may take, with room to spare,
# whatever its header or a crafted pickle claims.
MAX_BATCH_BYTES = 64 * 2**20


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
        found = super().find_class(module, name)
        return _sized(found) if name == "_reconstruct" else found


def _sized(reconstruct):
    """numpy's _reconstruct allocates the array a pickle asks for: a few bytes can ask for a terabyte."""
    def checked(subtype, shape, dtype):
        elements = np.prod(np.asarray(shape, dtype=np.float64))
        if not np.isfinite(elements) or elements * np.dtype(dtype).itemsize > MAX_BATCH_BYTES:
            raise pickle.UnpicklingError(f"an array of shape {shape!r:.80} is larger than a batch can be")
        return reconstruct(subtype, shape, dtype)
    return checked


def shared_archive() -> Path:
    """The copy every workspace on this machine shares: where keras.datasets.cifar10 keeps the same official
    file, so a queued experiment's fresh workspace finds it, and so does anyone who ran the seed's recipe."""
    return Path(os.environ["KERAS_HOME"]) / "datasets" / "cifar-10-batches-py.tar.gz"


def locate(archive: Path) -> Path:
    """data.archive when it is there; otherwise the shared copy, downloaded once by the first run that needs
    it while any other waits for it."""
    if archive.is_file():
        return archive
    if archive.exists():  # a folder or a device: neither to read, nor to download over
        raise ValueError(f"data.archive: {shown(archive)} is not a regular file; point it at the CIFAR-10 "
                         f"tar.gz, or remove it to download the archive")
    shared = shared_archive()
    with exclusive(shared):
        if not shared.is_file():
            download(shared, archive)
    log.info("%s is absent: reading the shared copy %s", archive, shared)
    return shared


def download(target: Path, archive: Path) -> None:
    log.info("downloading %s to %s", URL, target)
    try:
        with urllib.request.urlopen(URL, timeout=60) as response, atomic_file(target) as partial:
            size = int(response.headers.get("Content-Length") or 0) or None
            with open(partial, "wb") as file, tqdm(total=size, unit="B", unit_scale=True, desc="CIFAR-10",
                                                   disable=None) as progress:  # a bar in a terminal only
                while chunk := response.read(1 << 20):
                    file.write(chunk)
                    progress.update(len(chunk))
    except OSError as error:
        raise FileNotFoundError(
            f"data.archive: {archive} is missing and downloading {URL} failed ({error}); "
            f"download it by hand to {archive}, or run on synthetic data offline: {OFFLINE_RUN}"
        ) from error


def verify(archive: Path, verify: bool) -> str:
    """Return the archive's sha256; with `verify`, it must be the official one."""
    checksum = sha256_of(archive)
    if checksum == SHA256:
        return checksum
    if verify:
        raise ValueError(
            f"data.archive: {archive} has sha256 {checksum}, not the official {SHA256}; "
            f"delete it to download it again, or set data.verify: false to use it anyway"
        )
    log.warning("data.verify is false: using %s (sha256 %s), which is not the official archive", archive, checksum)
    return checksum


def _read_batch(name: str, payload: bytes) -> Split:
    try:
        batch = _BatchUnpickler(io.BytesIO(payload), encoding="bytes").load()
        if not isinstance(batch, dict):
            raise TypeError(f"it holds a {type(batch).__name__}, not a dict")
        data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    except (pickle.UnpicklingError, KeyError, TypeError, EOFError, ValueError, MemoryError) as error:
        raise ValueError(f"data.archive: {name} is not a CIFAR-10 batch ({shown(error)})") from error
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise ValueError(f"data.archive: {name} holds no uint8 (n, 3072) image array")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or not np.all((labels >= 0) & (labels < 10)):
        raise ValueError(f"data.archive: {name} needs {len(data)} integer labels in 0-9")
    # Rows are channel-planar: 1024 red, then 1024 green, then 1024 blue values.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(np.ascontiguousarray(images), labels.astype(np.int64))


def _check_member(member: tarfile.TarInfo) -> None:
    if member.issym() or member.islnk() or member.name.startswith("/") or ".." in Path(member.name).parts:
        raise ValueError(f"data.archive: refusing unsafe member {member.name!r} "
                         "(a link, or a path outside the archive)")


def read(archive: Path) -> tuple[Split, Split]:
    """Read the train and test splits straight from the python-format tarball."""
    wanted = {f"{FOLDER}/{name}" for name in (*TRAIN_BATCHES, TEST_BATCH)}
    payloads = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                _check_member(member)
                if member.name in wanted and member.isfile():
                    if member.size > MAX_BATCH_BYTES:
                        raise ValueError(f"data.archive: {shown(member.name)} in {shown(archive)} claims "
                                         f"{member.size:,} bytes, more than a CIFAR-10 batch can hold")
                    payloads[member.name.rsplit("/", 1)[1]] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise ValueError(f"data.archive: {shown(archive)} is not a readable tar.gz archive ({shown(error)}); "
                         "delete it and retry") from error
    missing = sorted(set(TRAIN_BATCHES + (TEST_BATCH,)) - set(payloads))
    if missing:
        raise ValueError(f"data.archive: {archive} lacks {', '.join(missing)} under {FOLDER}/")
    batches = {name: _read_batch(f"{FOLDER}/{name}", payload) for name, payload in payloads.items()}
    train = [batches[name] for name in TRAIN_BATCHES]
    train_split = Split(np.concatenate([b.images for b in train]), np.concatenate([b.labels for b in train]))
    return train_split, batches[TEST_BATCH]
