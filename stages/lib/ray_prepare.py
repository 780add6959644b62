"""prepare on Ray Data for a folder dataset: tasks decode and resize chunks of image files, and this process
(the driver) appends them in order to the cache, with the in-process run's arithmetic (resizing.py): the same
bytes, whichever runner. The tasks read the files where reads_placed() says (ray_cluster.py)."""
from pathlib import Path

import numpy as np
import ray

from stages.lib.cache import RowWriter
from stages.lib.datasets import ImageFiles
from stages.lib.images import read_image
from stages.lib.ray_cluster import connect, reads_placed, task_errors
from stages.lib.resizing import RESIZE_CHUNK, cached_pixels


def write_resized_on_ray(files: ImageFiles, size: int, path: Path) -> None:
    connect()
    chunks = [{"start": start, "paths": [str(file.absolute()) for file in files.paths[start:start + RESIZE_CHUNK]]}
              for start in range(0, len(files), RESIZE_CHUNK)]
    dataset = ray.data.from_items(chunks).map_batches(resized_files, batch_size=1, fn_kwargs={"size": size},
                                                      **reads_placed())
    with task_errors(), RowWriter(path, (len(files), size, size, 3), np.uint8) as cache:
        for row in dataset.iter_rows():
            if row["start"] != cache.written:
                raise ValueError(f"prepare: the chunk of image {row['start']} came where image {cache.written}'s "
                                 f"was due; run prepare again")
            cache.append(row["pixels"])


def resized_files(batch: dict, size: int) -> dict:
    return {"start": batch["start"],
            "pixels": np.stack([cached_pixels((read_image(Path(file))[None] for file in files), size)
                                for files in batch["paths"]])}
