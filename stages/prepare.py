"""Stage 1: cache the images resized to data.image_size (uint8) with one-hot labels, per split."""
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stages.lib import paths
from stages.lib.atomic import atomic_directory, write_json
from stages.lib.cache import RowWriter
from stages.lib.errors import run_stage
from stages.lib.fast_exit import end_process
from stages.lib.datasets import ImageFiles
from stages.lib.images import read_image
from stages.lib.params import Params
from stages.lib.resizing import RESIZE_CHUNK, cached_pixels
from stages.lib.runners import ray_address
from stages.lib.sources import load_source, split_source

log = logging.getLogger("prepare")


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
            cache.append(cached_pixels(same_size_batches(images[start:start + RESIZE_CHUNK]), size))


def writer(images: np.ndarray | ImageFiles):
    """Ray's for image files when RAY_ADDRESS is set. Arrays (CIFAR-10's archive, the synthetic set) are decoded
    in this process already: a task would only resize them, and its output travel back all the same."""
    if ray_address() and isinstance(images, ImageFiles):
        from stages.lib.ray_prepare import write_resized_on_ray  # imports Ray: only when asked for

        return write_resized_on_ray
    return write_resized


def run(params: Params) -> None:
    data = params.data
    source = load_source(data)
    splits = split_source(source, data)
    log.info("caching %s at %dx%d: %s", data.source, data.image_size, data.image_size,
             ", ".join(f"{name} {len(split.labels)}" for name, split in splits.items()))
    with atomic_directory(paths.PREPARED) as out:
        for name, split in splits.items():
            writer(split.images)(split.images, data.image_size, paths.images(name, out))
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
