"""Stage 2: run every cached image once through the frozen backbone and keep its pooled features.

To spread this over hosts or GPUs, see `python -m stages.shards`.
"""
import logging
import time

from stages import paths
from stages.atomic import atomic_directory, read_json, write_json
from stages.cache import RowReader
from stages.cli import run_stage
from stages.features import batch_starts, build_engine, extract_rows
from stages.params import Params

log = logging.getLogger("extract")


def run(params: Params) -> None:
    image_size = read_json(paths.PREPARED_INFO)["image_size"]
    timing = {"images": 0, "build_seconds": 0.0, "seconds": 0.0}
    with atomic_directory(paths.FEATURES) as out:
        recipe = {"image_size": image_size}
        if params.extract.enabled:
            started = time.perf_counter()
            engine, width, recipe = build_engine(params, image_size)
            built = time.perf_counter()
            for split in paths.SPLITS:
                images = RowReader(paths.images(split))
                starts = batch_starts(len(images), params.extract.batch_size)
                extract_rows(engine, width, images, params.extract.batch_size, starts, paths.features(split, out))
                timing["images"] += len(images)
            timing |= {"build_seconds": built - started, "seconds": time.perf_counter() - built}
        else:
            log.info("extract.enabled is false: train will run images through the backbone every epoch")
        write_json(paths.info(out), {"enabled": params.extract.enabled, **recipe})
    # The first batch's compilation (XLA, OpenVINO) counts: this is the rate the pipeline gets.
    timing["images_per_second"] = timing["images"] / timing["seconds"] if timing["seconds"] else 0.0
    write_json(paths.EXTRACT_TIMING, {"extract": timing})  # extract.seconds, not a bare seconds, in `dvc exp show`


def main() -> None:
    run_stage(run)


if __name__ == "__main__":
    main()
