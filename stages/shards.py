"""Extraction spread over hosts or GPUs: each extracts one shard, then one merges them into data/features.

    python -m stages.shards --extract I/N     the I-th of N shards, into data/shards/I-of-N
    python -m stages.shards --merge N         data/features from N shards, byte-identical to one process
"""
import argparse
import hashlib
import logging
from pathlib import Path

import numpy as np

from stages.lib import paths
from stages.lib.atomic import atomic_directory, read_json, write_json
from stages.lib.cache import RowReader, RowWriter
from stages.lib.errors import run_stage
from stages.lib.fast_exit import end_process
from stages.lib.engine_choice import resolve
from stages.lib.features import batch_starts, build_engine, engine_batch_size, extract_rows, prepared_images
from stages.lib.params import Params

log = logging.getLogger("shards")


def prepared_fingerprint() -> str:
    """Which prepared data a shard came from: its info and labels (images follow from the same params)."""
    digest = hashlib.sha256(paths.PREPARED_INFO.read_bytes())
    for split in paths.SPLITS:
        digest.update(paths.labels(split).read_bytes())
    return digest.hexdigest()


def extract_shard(params: Params, shard: int, shards: int) -> None:
    prepared = read_json(paths.PREPARED_INFO)
    engine, width, recipe = build_engine(params, prepared["image_size"])
    images = prepared_images()
    batch_size = engine_batch_size(params.extract.batch_size, len(images))  # as extract's, so the bytes agree
    starts = batch_starts(len(images), batch_size, shard, shards)
    with atomic_directory(paths.shard(shard, shards)) as out:
        first_rows = extract_rows(engine, width, images, batch_size, starts, out)
        write_json(paths.info(out), {**recipe, "prepared": prepared_fingerprint(), "first_rows": first_rows})
    log.info("wrote shard %d of %d to %s", shard, shards, paths.shard(shard, shards))


def read_shards(params: Params, shards: int) -> list[dict]:
    """Every shard's info, checked to come from these params, this prepared data and one engine."""
    image_size = read_json(paths.PREPARED_INFO)["image_size"]
    expected = {"backbone": params.model.backbone, "weights": params.model.weights, "seed": params.model.seed,
                "image_size": image_size, "precision": params.extract.precision,
                "batch_size": params.extract.batch_size, "prepared": prepared_fingerprint()}
    infos = []
    for index in range(shards):
        folder = paths.shard(index, shards)
        if not paths.info(folder).is_file():
            raise FileNotFoundError(f"shard {index} of {shards} is missing: run python -m stages.shards "
                                    f"--extract {index}/{shards} and put its output in {folder}")
        info = read_json(paths.info(folder))
        stale = [key for key, value in expected.items() if info.get(key) != value]
        if stale:
            raise ValueError(f"{folder}: extracted with other {', '.join(stale)} than params.yaml and "
                             f"data/prepared; extract that shard again")
        infos.append(info)
    check_engines([info["engine"] for info in infos], params)
    return infos


def check_engines(engines: list[str], params: Params) -> None:
    """One engine for all shards, and the one params.yaml names (auto may resolve differently per host)."""
    if len(set(engines)) > 1:
        raise ValueError(f"shards were extracted by different engines ({', '.join(sorted(set(engines)))}); "
                         f"set extract.engine to one of them and extract the others again")
    wanted = params.extract.engine
    if wanted != "auto" and engines[0] != resolve(wanted, params.model.backbone):
        raise ValueError(f"shards were extracted by the {engines[0]} engine, but extract.engine is {wanted}; "
                         f"extract them again, or set extract.engine: {engines[0]}")


def merged_split(split: str, shards: int, infos: list[dict], count: int, out: Path) -> None:
    """Concatenate the shards' rows of a split, checking that each starts where the previous one ended."""
    parts = [RowReader(paths.features(split, paths.shard(index, shards))) for index in range(shards)]
    if sum(len(part) for part in parts) != count:
        raise ValueError(f"the shards hold {sum(len(part) for part in parts)} {split} rows, but data/prepared has "
                         f"{count} {split} images; extract every shard again")
    row = 0
    with RowWriter(paths.features(split, out), (count, parts[0].shape[1]), np.float32) as merged:
        for index, (part, info) in enumerate(zip(parts, infos)):
            if len(part) and info["first_rows"][split] != row:
                raise ValueError(f"shard {index} of {shards} starts its {split} rows at "
                                 f"{info['first_rows'][split]}, not at {row} where the previous shard ended; "
                                 f"extract that shard again")
            merged.append(part[:])
            row += len(part)


def merge_shards(params: Params, shards: int) -> None:
    infos = read_shards(params, shards)
    counts = read_json(paths.PREPARED_INFO)["counts"]
    recipe = {key: value for key, value in infos[0].items() if key not in ("prepared", "first_rows")}
    with atomic_directory(paths.FEATURES) as out:
        for split in paths.SPLITS:
            merged_split(split, shards, infos, counts[split], out)
        write_json(paths.info(out), {"enabled": True, **recipe})
    log.info("merged %d shards into %s; record it with: dvc commit -f extract", shards, paths.FEATURES)


def shard_argument(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N, e.g. 0/2") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: I must be at least 0 and below N")
    return index, count


def shard_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of shards (1 or more)")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.shards", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--extract", type=shard_argument, metavar="I/N", help="extract only shard I of N")
    action.add_argument("--merge", type=shard_count, metavar="N", help="assemble data/features from N shards")
    args = parser.parse_args()
    if args.extract:
        run_stage(lambda params: extract_shard(params, *args.extract))
    else:
        run_stage(lambda params: merge_shards(params, args.merge))


if __name__ == "__main__":
    main()
    end_process()
