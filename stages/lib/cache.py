"""The caches on disk (resized images, features): written and read a block of rows at a time, and
features refused when a value is NaN or infinite.

Plain reads and writes, not memory maps: every page of a map that a process touches counts as its
resident memory (and against a container's memory limit) until the map is closed, so a stage walking a
9 GB cache through a map ends up holding 9 GB; through reads and writes it holds one block.

A non-finite feature poisons training differently on each path (some kernels turn it into a NaN
loss, others into a flat one), so it is stopped here, before any kernel sees it.
"""
import math
import os
from pathlib import Path

import numpy as np

from stages.lib import paths


class RowReader:
    """A .npy file's rows, read on demand: `reader[start:stop]` is a fresh array."""

    def __init__(self, path: Path):
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            self.shape, fortran_order, self.dtype = read_header(file)
            self.offset = file.tell()
            size = os.fstat(file.fileno()).st_size
        if fortran_order or self.dtype.hasobject or len(self.shape) < 1:
            raise ValueError(f"{path} is not a cache this pipeline writes; run `dvc repro --force` to rebuild it")
        self.path = path
        self.row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        if (claimed := self.shape[0] * self.row_bytes) != size - self.offset:  # a header may claim any shape
            length = "shorter" if claimed > size - self.offset else "longer"
            raise ValueError(f"{path} is {length} than its header says ({claimed:,} bytes of rows, the file holds "
                             f"{size - self.offset:,}: damaged or truncated); run `dvc repro --force` to rebuild it")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(len(self))
        if step != 1:
            raise IndexError("RowReader reads runs of rows")
        count = max(0, stop - start)
        with open(self.path, "rb") as file:
            data = os.pread(file.fileno(), count * self.row_bytes, self.offset + start * self.row_bytes)
        if len(data) != count * self.row_bytes:
            raise ValueError(f"{self.path} is shorter than its header says (damaged or truncated); "
                             f"run `dvc repro --force` to rebuild it")
        return np.frombuffer(data, self.dtype).reshape(count, *self.shape[1:])


class SplitRows:
    """Several caches' rows as one run, in order (train, then val, then test): `rows[start:stop]` may
    span two of them. `ranges` says where each one's rows lie in the run."""

    def __init__(self, readers: dict[str, RowReader]):
        self.readers, self.ranges, start = readers, {}, 0
        for name, reader in readers.items():
            self.ranges[name] = range(start, start + len(reader))
            start += len(reader)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.ranges.values())

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(len(self))
        return np.concatenate([reader[within(start, own):within(stop, own)]
                               for reader, own in zip(self.readers.values(), self.ranges.values())])


def padded_batch(images: SplitRows, start: int, batch_size: int) -> np.ndarray:
    """The engine's batch at `start`; the last one is padded: one input shape, so XLA and OpenVINO compile once."""
    batch = images[start:start + batch_size]
    return np.pad(batch, [(0, batch_size - len(batch))] + [(0, 0)] * 3)


def within(row: int, rows: range) -> int:
    """`row` of a run as an index into `rows`, its part of the run: clipped to 0..len(rows)."""
    return min(max(row - rows.start, 0), len(rows))


class RowWriter:
    """A .npy file written front to back; `append(rows)` adds rows, and closing checks that all came."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype):
        self.path, self.shape, self.dtype, self.written = path, shape, np.dtype(dtype), 0
        self.file = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.file, header)

    def append(self, rows: np.ndarray) -> None:
        """Rows of exactly the file's type and width: a narrower type or another width is refused, not cast."""
        if rows.dtype != self.dtype or rows.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.path}: rows of {rows.dtype} {rows.shape[1:]} given for a cache of "
                             f"{self.dtype} {self.shape[1:]}")
        if self.written + len(rows) > self.shape[0]:
            raise ValueError(f"{self.path}: more than its {self.shape[0]} rows given")
        self.file.write(np.ascontiguousarray(rows).tobytes())
        self.written += len(rows)

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.file.close()
        if kind is None and self.written != self.shape[0]:
            raise ValueError(f"{self.path}: {self.written} rows written of {self.shape[0]}")


def first_non_finite_row(rows: np.ndarray) -> int | None:
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    return int(bad[0]) if len(bad) else None


def load_features(split: str, root: Path = paths.FEATURES) -> np.ndarray:
    features = np.load(paths.features(split, root))
    if (bad := first_non_finite_row(features)) is not None:
        raise ValueError(f"{paths.features(split, root)}: row {bad} holds non-finite values (NaN or infinity); "
                         f"run `dvc repro --force extract` to compute the features again")
    return features
