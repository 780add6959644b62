"""The frozen backbone's pooled features, computed batch by batch and written as they come.

Shared by the in-process run and Ray's (ray_extract.py), so both compute the same bytes.
"""
import contextlib
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stages.lib import paths
from stages.lib.cache import RowReader, RowWriter, SplitRows, first_non_finite_row, padded_batch, within
from stages.lib.engine_choice import resolve
from stages.lib.engines import Engine, compile_engine, device, precision_policy
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


def batch_starts(count: int, batch_size: int) -> range:
    """The first row of each batch: whole batches, so every image meets the engine in the same batch, at the
    same position, whichever runner computes it."""
    return range(0, count, batch_size)


def image_batches(images: SplitRows, batch_size: int, starts: range):
    """Fixed-size batches from the cache, each read by a thread while the engine computes the one before.

    A thread, not tf.data's from_generator, whose machinery kept the engine waiting
    (benchmarks/README.md#figures-behind-choices-in-the-code).
    """
    with ThreadPoolExecutor(1) as reader:
        upcoming = [reader.submit(padded_batch, images, start, batch_size) for start in starts[:1]]
        for following in starts[1:]:
            upcoming.append(reader.submit(padded_batch, images, following, batch_size))
            yield upcoming.pop(0).result()
        yield from (batch.result() for batch in upcoming)


def split_pieces(computed: np.ndarray, start: int, ranges: dict[str, range]):
    """A batch's rows, which begin at row `start` of the run, by split: (split, first image, features)."""
    for split, rows in ranges.items():
        first, stop = within(start, rows), within(start + len(computed), rows)
        if first < stop:
            yield split, first, computed[rows.start + first - start:rows.start + stop - start]


def extract_rows(engine: Engine, width: int, images: SplitRows, batch_size: int, out: Path) -> None:
    """Every image's features into one file per split in `out`."""
    starts = batch_starts(len(images), batch_size)
    computed = (engine(batch) for batch in image_batches(images, batch_size, starts))
    write_rows(zip(starts, computed), width, images, batch_size, out)


def write_rows(batches: Iterable[tuple[int, np.ndarray]], width: int, images: SplitRows, batch_size: int,
               out: Path) -> None:
    """Computed batches (first row, features), in order, into one file per split in `out`. A batch out of
    order, a split left short, or a NaN or infinite feature stops it, naming the image."""
    with contextlib.ExitStack() as files, \
            tqdm(total=len(images), desc="extract", unit="img", disable=None) as progress:
        writers = {split: files.enter_context(RowWriter(paths.features(split, out), (len(rows), width), np.float32))
                   for split, rows in images.ranges.items()}
        due = 0
        for start, computed in batches:
            if start != due:
                raise ValueError(f"extract: the batch of image {start} of the run came where image {due}'s was due; "
                                 f"run extract again")
            computed = computed[:min(batch_size, len(images) - start)]
            for split, image, features in split_pieces(computed, start, images.ranges):
                if (bad := first_non_finite_row(features)) is not None:
                    raise ValueError(f"extract: the backbone gave non-finite features for {split} image "
                                     f"{image + bad}; check model.weights, or set extract.precision: float32")
                writers[split].append(features)
            progress.update(len(computed))
            due = start + batch_size


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
