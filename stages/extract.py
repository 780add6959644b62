"""Stage 2: run every cached image once through the frozen backbone and keep its pooled features.

With RAY_ADDRESS set, Ray Data spreads it over a cluster's GPUs or CPUs (stages/lib/runners.py).
"""
import logging
import time
from pathlib import Path

from stages.lib import paths
from stages.lib.atomic import atomic_directory, holding, read_json, write_json
from stages.lib.engine_choice import resolve, use_backend_of
from stages.lib.errors import run_stage
from stages.lib.fast_exit import end_process
from stages.lib.params import Params
from stages.lib.runners import IN_PROCESS, ray_address

log = logging.getLogger("extract")


def run(params: Params) -> None:
    use_backend_of(resolve(params.extract.engine, params.model.backbone))
    with holding(paths.PREPARED):
        extract(params)


def extract(params: Params) -> None:
    image_size = read_json(paths.PREPARED_INFO)["image_size"]
    timing = {"images": 0}
    with atomic_directory(paths.FEATURES) as out:
        recipe = {"image_size": image_size}
        if params.extract.enabled:
            recipe = runner()(params, image_size, out, timing)
        else:
            log.info("extract.enabled is false: train will run images through the backbone every epoch")
        write_json(paths.info(out), {"enabled": params.extract.enabled, **recipe})
    write_json(paths.EXTRACT_TIMING, {"extract": timing})  # extract.seconds, not a bare seconds, in `dvc exp show`


def runner():
    if ray_address():
        from stages.lib.ray_extract import extract_on_ray  # imports Ray: only when asked for

        return extract_on_ray
    return extract_splits


class FirstCallTimer:
    """An engine that notes how long its first call took: the first batch also compiles (XLA, OpenVINO)."""

    def __init__(self, engine):
        self.engine, self.first_seconds = engine, None

    def __call__(self, batch):
        start = time.perf_counter()
        computed = self.engine(batch)
        if self.first_seconds is None:
            self.first_seconds = time.perf_counter() - start
        return computed


def extract_splits(params: Params, image_size: int, out: Path, timing: dict) -> dict:
    """Every split's features into `out`; returns what decides them, and adds the seconds spent to `timing`:
    images_per_second is the rate after the first batch (the engine's own rate, inside the pipeline),
    seconds everything after building the engine."""
    # Imported here, once the engine has chosen Keras's backend: Keras reads it when first imported.
    from stages.lib.engines import device
    from stages.lib.features import build_engine, engine_batch_size, extract_rows, prepared_images

    started = time.perf_counter()
    engine, width, recipe = build_engine(params, image_size)
    built, timed_engine = time.perf_counter(), FirstCallTimer(engine)
    images = prepared_images()
    batch_size = engine_batch_size(params.extract.batch_size, len(images))
    extract_rows(timed_engine, width, images, batch_size, out)
    seconds, first_seconds = time.perf_counter() - built, timed_engine.first_seconds or 0.0
    later_images = len(images) - min(batch_size, len(images))  # after the first batch
    rate = later_images / (seconds - first_seconds) if later_images else 0.0
    timing |= {**IN_PROCESS, "engine": recipe["engine"], "devices": [device()], "images": len(images),
               "build_seconds": built - started, "first_batch_seconds": first_seconds,
               "seconds": seconds, "images_per_second": rate}
    return recipe


def main() -> None:
    run_stage(run)


if __name__ == "__main__":
    main()
    end_process()
