"""The frozen backbone's pooled features, computed batch by batch and written as they come.

Shared by the extract stage and the shard tool, so one process and N shards compute the same bytes.
"""
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stages.lib import paths
from stages.lib.cache import RowReader, RowWriter, SplitRows, first_non_finite_row, within
from stages.lib.engine_choice import resolve
from stages.lib.engines import Engine, compile_engine, gpu_available, precision_policy
from stages.lib.models import build_backbone, image_model
from stages.lib.params import Params

log = logging.getLogger("extract")


def engine_batch_size(batch_size: int, images: int) -> int:
    """extract.batch_size, or all the images when there are fewer: the rest of a padded batch is computed
    for nothing, and one batch size keeps XLA and OpenVINO to one compilation."""
    return min(batch_size, images)


def prepared_images() -> SplitRows:
    """Every split's prepared images as one run of rows. Batches run on across a split's end, so only the
    run's last batch is padded, not each split's (rows computed for nothing)."""
    return SplitRows({split: RowReader(paths.images(split)) for split in paths.SPLITS})


def batch_starts(count: int, batch_size: int, shard: int = 0, shards: int = 1) -> range:
    """The first row of each batch in this shard: whole batches, so every image meets the engine
    in the same batch, at the same position, however the work is split."""
    starts = range(0, count, batch_size)
    per_shard = -(-len(starts) // shards)
    return starts[shard * per_shard:(shard + 1) * per_shard]


def image_batches(images: SplitRows, batch_size: int, starts: range):
    """Fixed-size batches from the cache, each read by a thread while the engine computes the one before.

    A thread, not tf.data's from_generator, whose machinery kept the engine waiting
    (benchmarks/README.md#figures-behind-choices-in-the-code).
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


def split_pieces(computed: np.ndarray, start: int, ranges: dict[str, range]):
    """A batch's rows, which begin at row `start` of the run, by split: (split, first image, features)."""
    for split, rows in ranges.items():
        first, stop = within(start, rows), within(start + len(computed), rows)
        if first < stop:
            yield split, first, computed[rows.start + first - start:rows.start + stop - start]


def extract_rows(engine: Engine, width: int, images: SplitRows, batch_size: int, starts: range,
                 out: Path) -> dict[str, int]:
    """Features of the batches at `starts` into one file per split in `out`; returns the image each file
    starts at. A NaN or infinite feature stops it, naming the image."""
    first = starts[0] if starts else len(images)  # a shard may have no batch
    stop = min(starts[-1] + batch_size, len(images)) if starts else len(images)
    with contextlib.ExitStack() as files, \
            tqdm(total=stop - first, desc="extract", unit="img", disable=None) as progress:
        writers = {split: files.enter_context(RowWriter(paths.features(split, out),
                                                        (within(stop, rows) - within(first, rows), width), np.float32))
                   for split, rows in images.ranges.items()}
        for start, batch in zip(starts, image_batches(images, batch_size, starts)):
            computed = engine(batch)[:min(batch_size, len(images) - start)]
            for split, image, features in split_pieces(computed, start, images.ranges):
                if (bad := first_non_finite_row(features)) is not None:
                    raise ValueError(f"extract: the backbone gave non-finite features for {split} image "
                                     f"{image + bad}; check model.weights, or set extract.precision: float32")
                writers[split].append(features)
            progress.update(len(computed))
    return {split: within(first, rows) for split, rows in images.ranges.items()}


def device() -> str:
    return "GPU" if gpu_available() else "CPU"


def build_engine(params: Params, image_size: int) -> tuple[Engine, int, dict]:
    """The compiled extractor, its feature width, and what decides its output (recorded beside it)."""
    model, extract = params.model, params.extract
    engine = resolve(extract.engine, model.backbone)
    with precision_policy(extract.precision, engine):
        backbone = build_backbone(model.backbone, model.weights, image_size, model.seed)
        extractor = image_model(model.backbone, backbone, image_size, input_size=image_size)
    log.info("extracting with %s on the %s engine (%s, %s) at %dx%d",
             model.backbone, engine, extract.precision, device(), image_size, image_size)
    recipe = {"backbone": model.backbone, "weights": model.weights, "seed": model.seed, "image_size": image_size,
              "engine": engine, "precision": extract.precision, "batch_size": extract.batch_size}
    return compile_engine(extractor, engine, extract.precision), extractor.output.shape[-1], recipe
