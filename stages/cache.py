"""Reading the cached features back: numpy only, and refused when a value is NaN or infinite.

A non-finite feature poisons training differently on each path (some kernels turn it into a NaN
loss, others into a flat one), so it is stopped here, before any kernel sees it.
"""
from pathlib import Path

import numpy as np

from stages import paths


def first_non_finite_row(rows: np.ndarray) -> int | None:
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    return int(bad[0]) if len(bad) else None


def load_features(split: str, root: Path = paths.FEATURES) -> np.ndarray:
    features = np.load(paths.features(split, root))
    if (bad := first_non_finite_row(features)) is not None:
        raise ValueError(f"{paths.features(split, root)}: row {bad} holds non-finite values (NaN or infinity); "
                         f"run `dvc repro --force extract` to compute the features again")
    return features
