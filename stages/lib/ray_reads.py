"""The Ray tasks that read data/prepared for extract's actors, in a module of their own: the workers that run
them import it, and no ML framework comes with it. Reading waits on disks: the tasks take no CPU from the
engines, one task per actor."""
import functools
import hashlib
from pathlib import Path

import numpy as np

from stages.lib import paths
from stages.lib.cache import RowReader, SplitRows, padded_batch
from stages.lib.quoting import shown
from stages.lib.ray_cluster import SHARED_VARIABLE


def cache_mark(root: Path) -> str:
    """Which data/prepared this is: its record and its files' sizes (the same params give the same bytes)."""
    digest = hashlib.sha256(paths.info(root).read_bytes())
    for split in paths.SPLITS:
        digest.update(str(paths.images(split, root).stat().st_size).encode())
    return digest.hexdigest()


@functools.cache
def readable_cache(root: str, mark: str) -> SplitRows:
    """The driver's data/prepared as this node reads it at the driver's path, checked once per worker."""
    fix = f"mount it at that path on every node, or unset {SHARED_VARIABLE} to read it on the driver's node"
    try:
        here = cache_mark(Path(root))
        images = SplitRows({split: RowReader(paths.images(split, Path(root))) for split in paths.SPLITS})
    except OSError as error:
        raise FileNotFoundError(f"a Ray node cannot read data/prepared at {shown(root, False)} "
                                f"({shown(error)}); {fix}") from None
    if here != mark:
        raise ValueError(f"a Ray node reads another data/prepared at {shown(root, False)} than the driver's; {fix}")
    return images


def read_batches(batch: dict, root: str, batch_size: int, mark: str) -> dict:
    images = readable_cache(root, mark)
    return {"start": batch["start"],
            "images": np.stack([padded_batch(images, int(start), batch_size) for start in batch["start"]])}
