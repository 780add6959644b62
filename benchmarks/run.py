"""Benchmarks, offline (synthetic images, randomly initialised backbones): `python -m benchmarks.run`.

1. End to end: the four pipeline stages against the seed's one-script recipe, time and test accuracy.
2. Extraction throughput at 224x224: our engine against a plain model.predict, and against the
   machine's dense matmul peak (benchmarks.throughput).
3. Peak memory of prepare and extract at the smallest and largest of those sizes (N and 4N by default).
4. Training the head on 45,000 cached feature vectors: the train stage's fit against Keras's plain fit
   (benchmarks.head).

Prints a plain-text table per part and writes everything to benchmarks/results/<UTC time>.json.
Every measurement runs in a process of its own; this one imports no TensorFlow, because Linux carries
a parent's resident high-water mark into each child it starts, which would inflate the peaks of part 3.
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.tables import (TARGET_RATIO, end_to_end_table, head_table, machine, machine_line, memory_table,
                               throughput_table)
from benchmarks.workload import EPOCHS, REPO, run_module, run_params, write_folder_dataset, write_params
from stages.lib import paths
from stages.lib.atomic import read_json

RESULTS = REPO / "benchmarks" / "results"
STAGES = ("prepare", "extract", "train", "evaluate")
SEED_RESULT = "seed_result.json"

QUICK = {"sizes": [40, 160], "image_size": 64, "backbones": "densenet121", "throughput_images": 16,
         "head_features": 5000}
# A workload of CIFAR-10's size class at 64x64, where the backbone is cheap and fixed costs show.
LARGE = {"sizes": [2000, 12000], "image_size": 64, "backbones": "densenet121"}


def accuracy_tolerance(accuracy: float, test_size: int) -> float:
    """Two binomial standard errors of an accuracy on `test_size` images, and never less than one image."""
    return max(2 * math.sqrt(accuracy * (1 - accuracy) / test_size), 1 / test_size)


def forward_pass_bound(counts: dict) -> float:
    """The best ratio the backbone's forward passes allow: the seed runs train and val through it every
    epoch, the pipeline runs every split once. Start-up and the head's training only lower it."""
    training = counts["train"] + counts["val"]
    return (EPOCHS * training + counts["test"]) / (training + counts["test"])


def end_to_end(total_images: int, image_size: int) -> dict:
    """The four stages, then the seed's recipe, on the same images in one temporary folder."""
    with tempfile.TemporaryDirectory(prefix="benchmark-end-to-end-") as temporary:
        folder = Path(temporary)
        data = write_folder_dataset(folder / "images", total_images)
        write_params(folder, run_params(data, image_size))
        stages = {stage: run_module(f"stages.{stage}", folder) for stage in STAGES}
        counts = read_json(folder / paths.PREPARED_INFO)["counts"]
        engine = read_json(folder / paths.FEATURES_INFO)["engine"]
        ours_accuracy = read_json(folder / paths.METRICS_FILE)["accuracy"]
        seed_seconds = run_module("benchmarks.seed_recipe", folder, SEED_RESULT).seconds
        seed_result = read_json(folder / SEED_RESULT)
    ours_seconds = sum(stage.seconds for stage in stages.values())
    tolerance = accuracy_tolerance((ours_accuracy + seed_result["accuracy"]) / 2, counts["test"])
    difference = abs(ours_accuracy - seed_result["accuracy"])
    return {
        "images": sum(counts.values()), "counts": counts, "image_size": image_size, "engine": engine,
        "ours_seconds": ours_seconds, "ours_stage_seconds": {name: stage.seconds for name, stage in stages.items()},
        "memory_mb": {name: {"peak_rss": stages[name].peak_rss_mb, "peak_anonymous": stages[name].peak_anonymous_mb}
                      for name in ("prepare", "extract")},
        "seed_seconds": seed_seconds, "seed_phase_seconds": seed_result["seconds"],
        "ratio": seed_seconds / ours_seconds, "forward_pass_bound": forward_pass_bound(counts),
        "ours_accuracy": ours_accuracy, "seed_accuracy": seed_result["accuracy"],
        "accuracy_difference": difference, "accuracy_tolerance": tolerance, "within_tolerance": difference <= tolerance,
    }


def crossover(rows: list[dict]) -> dict:
    """Both sides' times as lines in the image count through the smallest and largest run: the size from
    which the ratio reaches the target, and the ratio it tends to. An extrapolation, and said to be one."""
    small, large = rows[0], rows[-1]
    span = large["images"] - small["images"]
    ours_slope = (large["ours_seconds"] - small["ours_seconds"]) / span
    seed_slope = (large["seed_seconds"] - small["seed_seconds"]) / span
    ours_start = small["ours_seconds"] - ours_slope * small["images"]
    seed_start = small["seed_seconds"] - seed_slope * small["images"]
    limit = seed_slope / ours_slope
    # seed_start + seed_slope * n = TARGET_RATIO * (ours_start + ours_slope * n)
    reaching = ((TARGET_RATIO * ours_start - seed_start) / (seed_slope - TARGET_RATIO * ours_slope)
                if limit > TARGET_RATIO else None)
    return {"ours_seconds_per_image": ours_slope, "seed_seconds_per_image": seed_slope,
            "ours_fixed_seconds": ours_start, "seed_fixed_seconds": seed_start,
            "limit_ratio": limit, "reaches_target_from_images": reaching}


def throughput(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="benchmark-throughput-") as temporary:
        folder = Path(temporary)
        run_module("benchmarks.throughput", folder, "throughput.json", "--backbones", args.backbones,
                   "--engines", args.engines, "--images", str(args.throughput_images),
                   "--batch-size", str(args.batch_size))
        return read_json(folder / "throughput.json")


def head_training(features: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="benchmark-head-") as temporary:
        folder = Path(temporary)
        run_module("benchmarks.head", folder, "head.json", "--features", str(features), "--epochs", str(EPOCHS))
        return read_json(folder / "head.json")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda text: [int(size) for size in text.split(",")], default=[40, 160],
                        help="end to end: total images over train, val and test, comma-separated")
    parser.add_argument("--image-size", type=int, default=224, help="end to end: data.image_size (the seed's 224)")
    parser.add_argument("--backbones", default="densenet121,vgg16,convnext_tiny", help="throughput: comma-separated")
    parser.add_argument("--engines", default="auto",
                        help="throughput: comma-separated, of auto, tensorflow, xla, openvino (each one compiles)")
    parser.add_argument("--throughput-images", type=int, default=32, help="throughput: timed images per engine")
    parser.add_argument("--batch-size", type=int, default=16, help="throughput: images per call")
    parser.add_argument("--head-features", type=int, default=50_000,
                        help="head training: feature vectors, train and validation together")
    presets = parser.add_mutually_exclusive_group()
    presets.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    presets.add_argument("--large", action="store_true",
                         help="end to end on {:,} and {:,} images at {size}x{size}, DenseNet-121 only".format(
                             *LARGE["sizes"], size=LARGE["image_size"]))
    chosen = parser.parse_args(argv)
    if chosen.quick or chosen.large:
        parser.set_defaults(**(QUICK if chosen.quick else LARGE))
    args = parser.parse_args(argv)
    if len(args.sizes) < 2:
        parser.error("--sizes needs two sizes or more: the crossover and the memory growth compare them")
    return args


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    results = {"arguments": vars(args), "machine": machine(), "end_to_end": []}
    # Throughput first: a mistyped backbone or engine then fails in seconds, not after the end-to-end runs.
    progress(f"throughput: {args.backbones}")
    results["throughput"] = throughput(args)
    for total in args.sizes:
        progress(f"end to end: {total} images")
        results["end_to_end"].append(end_to_end(total, args.image_size))
    results["crossover"] = crossover(results["end_to_end"])
    progress(f"head training: {args.head_features:,} feature vectors")
    results["head"] = head_training(args.head_features)
    results["seconds"] = time.perf_counter() - started
    results["machine"]["load_average_at_end"] = os.getloadavg()
    print("\n\n".join([
        machine_line(results["machine"]),
        "1. End to end: our four stages against the seed's recipe\n" + end_to_end_table(results["end_to_end"],
                                                                                       results["crossover"]),
        "2. Extraction throughput\n" + throughput_table(results["throughput"], args.throughput_images, args.batch_size),
        "3. Peak memory of prepare and extract\n" + memory_table(results["end_to_end"]),
        "4. Training the head on cached features\n" + head_table(results["head"]),
        f"Benchmark took {results['seconds'] / 60:.1f} minutes.",
    ]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Results: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
