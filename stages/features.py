"""The frozen backbone's pooled features, computed batch by batch and written as they come.

Shared by the extract stage and the shard tool, so one process and N shards compute the same bytes.
"""
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from stages.cache import RowReader, RowWriter, first_non_finite_row
from stages.engines import Engine, compile_engine, gpu_available, precision_policy, resolve
from stages.models import build_backbone, image_model
from stages.params import Params

log = logging.getLogger("extract")


def engine_batch_size(batch_size: int, split_counts: dict[str, int]) -> int:
    """extract.batch_size, or the largest split's size when every split is smaller: the rest of a padded
    batch is computed for nothing (40 images at batch 64 made 192 rows), and one batch size for every
    split keeps XLA and OpenVINO to one compilation."""
    return min(batch_size, max(split_counts.values()))


def batch_starts(count: int, batch_size: int, shard: int = 0, shards: int = 1) -> range:
    """The first image of each batch in this shard: whole batches, so every image meets the engine
    in the same batch, at the same position, however the work is split."""
    starts = range(0, count, batch_size)
    per_shard = -(-len(starts) // shards)
    return starts[shard * per_shard:(shard + 1) * per_shard]


def image_batches(images: RowReader, batch_size: int, starts: range):
    """Fixed-size batches from the cache, each read by a thread while the engine computes the one before.

    A thread, not tf.data's from_generator: through it, extraction of 1,000 images at 224x224 ran at 61 %
    of the engine's own rate, its batches waiting seconds on tf.data's machinery outside the engine.
    The last batch is padded: one input shape, so XLA and OpenVINO compile once.
    """
    def read(start: int) -> np.ndarray:
        batch = images[start:start + batch_size]
        return np.pad(batch, [(0, batch_size - len(batch))] + [(0, 0)] * 3)

    with ThreadPoolExecutor(1) as reader:
        upcoming = [reader.submit(read, start) for start in starts[:1]]
        for following in starts[1:]:
            upcoming.append(reader.submit(read, following))
            yield upcoming.pop(0).result()
        yield from (batch.result() for batch in upcoming)


def extract_rows(engine: Engine, width: int, images: RowReader, batch_size: int, starts: range, out: Path) -> None:
    """Features of the batches at `starts` into `out`; a NaN or infinite feature stops it, naming the image."""
    rows = min(starts[-1] + batch_size, len(images)) - starts[0] if starts else 0  # a shard may have no batch
    with RowWriter(out, (rows, width), np.float32) as features, \
            tqdm(total=rows, desc=f"extract {out.stem}", unit="img", disable=None) as progress:
        for start, batch in zip(starts, image_batches(images, batch_size, starts)):
            count = min(batch_size, len(images) - start)
            computed = engine(batch)[:count]
            if (bad := first_non_finite_row(computed)) is not None:
                raise ValueError(f"extract: the backbone gave non-finite features for {out.stem} image "
                                 f"{start + bad}; check model.weights, or set extract.precision: float32")
            features.append(computed)
            progress.update(count)


def build_engine(params: Params, image_size: int) -> tuple[Engine, int, dict]:
    """The compiled extractor, its feature width, and what decides its output (recorded beside it)."""
    model, extract = params.model, params.extract
    engine = resolve(extract.engine, model.backbone)
    if gpu_available():
        tf.config.experimental.enable_op_determinism()  # a GPU's reductions: same images, same bytes
    with precision_policy(extract.precision, engine):
        backbone = build_backbone(model.backbone, model.weights, image_size, model.seed)
        extractor = image_model(model.backbone, backbone, image_size, input_size=image_size)
    log.info("extracting with %s on the %s engine (%s) at %dx%d",
             model.backbone, engine, extract.precision, image_size, image_size)
    recipe = {"backbone": model.backbone, "weights": model.weights, "seed": model.seed, "image_size": image_size,
              "engine": engine, "precision": extract.precision, "batch_size": extract.batch_size}
    return compile_engine(extractor, engine, extract.precision), extractor.output.shape[-1], recipe
