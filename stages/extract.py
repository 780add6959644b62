"""Stage 2: run every cached image once through the frozen backbone and keep its pooled features.

`python -m stages.extract --shard I/N` extracts only the I-th of N shards (one per host or GPU) and
`python -m stages.extract --merge N` assembles data/features from them, byte-identical to one process.
"""
import argparse
import hashlib
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from stages import paths
from stages.atomic import atomic_directory, read_json, write_json
from stages.backbones import build_backbone, image_model
from stages.cli import run_stage
from stages.engines import Engine, compile_engine, resolve, use_precision
from stages.params import Params

log = logging.getLogger("extract")


def batch_starts(count: int, batch_size: int, shard: int = 0, shards: int = 1) -> range:
    """The first image of each batch in this shard: whole batches, so every image meets the engine
    in the same batch, at the same position, however the work is split."""
    starts = range(0, count, batch_size)
    per_shard = -(-len(starts) // shards)
    return starts[shard * per_shard:(shard + 1) * per_shard]


def image_batches(images: np.ndarray, batch_size: int, starts: range):
    """Fixed-size batches from the memory-mapped cache, read ahead by tf.data while the engine computes.

    The last batch is padded: one input shape, so XLA and OpenVINO compile once.
    """
    def read():
        for start in starts:
            batch = images[start:start + batch_size]
            yield np.pad(batch, [(0, batch_size - len(batch))] + [(0, 0)] * 3)

    signature = tf.TensorSpec((batch_size, *images.shape[1:]), tf.uint8)
    return tf.data.Dataset.from_generator(read, output_signature=signature).prefetch(2).as_numpy_iterator()


def extract_rows(engine: Engine, width: int, images: np.ndarray, batch_size: int, starts: range, out: Path) -> None:
    if not starts:  # a shard with no batch of this split
        np.save(out, np.zeros((0, width), np.float32))
        return
    first = starts[0]
    rows = min(starts[-1] + batch_size, len(images)) - first
    features = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(rows, width))
    with tqdm(total=rows, desc=f"extract {out.stem}", unit="img", disable=None) as progress:
        for start, batch in zip(starts, image_batches(images, batch_size, starts)):
            count = min(batch_size, len(images) - start)
            features[start - first:start - first + count] = engine(batch)[:count]
            progress.update(count)
    features.flush()


def build_engine(params: Params, image_size: int) -> tuple[Engine, int, dict]:
    """The compiled extractor, its feature width, and what decides its output (recorded beside it)."""
    model, extract = params.model, params.extract
    engine = resolve(extract.engine, model.backbone)
    use_precision(extract.precision, engine)
    backbone = build_backbone(model.backbone, model.weights, image_size, model.seed)
    extractor = image_model(model.backbone, backbone, image_size, input_size=image_size)
    log.info("extracting with %s on the %s engine (%s) at %dx%d",
             model.backbone, engine, extract.precision, image_size, image_size)
    recipe = {"backbone": model.backbone, "weights": model.weights, "seed": model.seed, "image_size": image_size,
              "engine": engine, "precision": extract.precision, "batch_size": extract.batch_size}
    return compile_engine(extractor, engine, extract.precision), extractor.output.shape[-1], recipe


def run(params: Params) -> None:
    image_size = read_json(paths.PREPARED_INFO)["image_size"]
    with atomic_directory(paths.FEATURES) as out:
        recipe = {"image_size": image_size}
        if params.extract.enabled:
            engine, width, recipe = build_engine(params, image_size)
            for split in paths.SPLITS:
                images = np.load(paths.images(split), mmap_mode="r")
                starts = batch_starts(len(images), params.extract.batch_size)
                extract_rows(engine, width, images, params.extract.batch_size, starts, paths.features(split, out))
        else:
            log.info("extract.enabled is false: train will run images through the backbone every epoch")
        write_json(paths.info(out), {"enabled": params.extract.enabled, **recipe})


def prepared_fingerprint() -> str:
    """Which prepared data a shard came from: its info and labels (images follow from the same params)."""
    digest = hashlib.sha256(paths.PREPARED_INFO.read_bytes())
    for split in paths.SPLITS:
        digest.update(paths.labels(split).read_bytes())
    return digest.hexdigest()


def extract_shard(params: Params, shard: int, shards: int) -> None:
    image_size = read_json(paths.PREPARED_INFO)["image_size"]
    engine, width, recipe = build_engine(params, image_size)
    with atomic_directory(paths.shard(shard, shards)) as out:
        rows = {}
        for split in paths.SPLITS:
            images = np.load(paths.images(split), mmap_mode="r")
            starts = batch_starts(len(images), params.extract.batch_size, shard, shards)
            extract_rows(engine, width, images, params.extract.batch_size, starts, paths.features(split, out))
            rows[split] = starts[0] if starts else len(images)
        write_json(paths.info(out), {**recipe, "prepared": prepared_fingerprint(), "first_rows": rows})
    log.info("wrote shard %d of %d to %s", shard, shards, paths.shard(shard, shards))


def read_shards(params: Params, shards: int) -> list[Path]:
    """Every shard's folder, checked to come from these params and this prepared data."""
    image_size = read_json(paths.PREPARED_INFO)["image_size"]
    expected = {"backbone": params.model.backbone, "weights": params.model.weights, "seed": params.model.seed,
                "image_size": image_size, "precision": params.extract.precision,
                "batch_size": params.extract.batch_size, "prepared": prepared_fingerprint()}
    folders = [paths.shard(index, shards) for index in range(shards)]
    engines = set()
    for index, folder in enumerate(folders):
        if not paths.info(folder).is_file():
            raise FileNotFoundError(f"shard {index} of {shards} is missing: run python -m stages.extract "
                                    f"--shard {index}/{shards} and put its output in {folder}")
        info = read_json(paths.info(folder))
        stale = [key for key, value in expected.items() if info.get(key) != value]
        if stale:
            raise ValueError(f"{folder}: extracted with other {', '.join(stale)} than params.yaml and "
                             f"data/prepared; extract that shard again")
        engines.add(info["engine"])
    if len(engines) > 1:
        raise ValueError(f"shards were extracted by different engines ({', '.join(sorted(engines))}); "
                         f"set extract.engine to one of them and extract the others again")
    return folders


def merge_shards(params: Params, shards: int) -> None:
    folders = read_shards(params, shards)
    recipe = {key: value for key, value in read_json(paths.info(folders[0])).items()
              if key not in ("prepared", "first_rows")}
    with atomic_directory(paths.FEATURES) as out:
        for split in paths.SPLITS:
            parts = [np.load(paths.features(split, folder), mmap_mode="r") for folder in folders]
            merged = np.lib.format.open_memmap(paths.features(split, out), mode="w+", dtype=np.float32,
                                               shape=(sum(len(part) for part in parts), parts[0].shape[1]))
            row = 0
            for part in parts:
                merged[row:row + len(part)] = part
                row += len(part)
            merged.flush()
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
    parser = argparse.ArgumentParser(prog="python -m stages.extract", description=__doc__.splitlines()[0])
    parser.add_argument("--shard", type=shard_argument, metavar="I/N", help="extract only shard I of N")
    parser.add_argument("--merge", type=shard_count, metavar="N", help="assemble data/features from N shards")
    args = parser.parse_args()
    if args.shard:
        run_stage(lambda params: extract_shard(params, *args.shard))
    elif args.merge:
        run_stage(lambda params: merge_shards(params, args.merge))
    else:
        run_stage(run)


if __name__ == "__main__":
    main()
