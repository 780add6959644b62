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
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import yaml

from stages.lib import paths
from stages.lib.atomic import read_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
STAGES = ("prepare", "extract", "train", "evaluate")
EPOCHS = 10  # the seed's
SEED = 42
BACKBONE = "densenet121"  # the project's default
SEED_RESULT = "seed_result.json"
TARGET_RATIO = 8.0
MEMORY_GROWTH_TARGET = 1.2  # peak at 4N over peak at N
MEMORY_CEILING_MB = 3 * 1024
TEST_SHARE = 1 / 6  # CIFAR-10: 10,000 test images of 60,000
VAL_SHARE = 0.1  # the project's 5,000 of 50,000 training images

QUICK = {"sizes": [40, 160], "image_size": 64, "backbones": "densenet121", "throughput_images": 16,
         "head_features": 5000}
# A workload of CIFAR-10's size class at 64x64, where the backbone is cheap and fixed costs show.
LARGE = {"sizes": [2000, 12000], "image_size": 64, "backbones": "densenet121"}


@dataclass(frozen=True)
class Finished:
    seconds: float
    peak_rss_mb: float  # everything resident, file pages of memory-mapped arrays included
    peak_anonymous_mb: float  # the process's own memory, without the page cache


def anonymous_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # it has just exited
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("RssAnon:")), 0.0)


def run_module(module: str, folder: Path, *args: str) -> Finished:
    """`python -m module` in `folder`, as dvc runs a stage: its wall clock and its peak memory."""
    log = folder / f"{module}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    peak_anonymous = 0.0
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=folder, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
        # wait4 returns the child's own rusage (ru_maxrss, KiB); the kernel keeps no peak of anonymous
        # memory, so that is sampled while the child runs.
        while not (waited := os.wait4(process.pid, os.WNOHANG))[0]:
            peak_anonymous = max(peak_anonymous, anonymous_mb(process.pid))
            time.sleep(0.05)
    _, status, usage = waited
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        tail = "\n".join(log.read_text().strip().splitlines()[-8:])
        raise RuntimeError(f"{module} exited with {process.returncode} in {folder}:\n{tail}")
    return Finished(seconds, usage.ru_maxrss / 1024, peak_anonymous)


def write_folder_dataset(root: Path, total_images: int) -> dict:
    """The synthetic images as a folder dataset in CIFAR-10's proportions (a sixth of them for test),
    and the params that read it. The synthetic source's data.limit would give test as many images as
    train, a split that caps any speed-up over the seed's recipe well below CIFAR-10's."""
    from PIL import Image

    from stages.lib.datasets import SYNTHETIC_CLASSES, synthetic_split

    test_count = max(len(SYNTHETIC_CLASSES), round(total_images * TEST_SHARE))
    for split_index, (split, count) in enumerate((("train", total_images - test_count), ("test", test_count))):
        images = synthetic_split(count, SEED, split_index)
        for number, (image, label) in enumerate(zip(images.images, images.labels)):
            folder = root / split / SYNTHETIC_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{number}.png")
    return {"source": "folder", "path": str(root), "limit": None,
            "val_size": max(len(SYNTHETIC_CLASSES), round((total_images - test_count) * VAL_SHARE))}


def run_params(data: dict, image_size: int) -> dict:
    """Overrides of params.yaml: the offline data at `image_size`, random weights, the seed's 10 epochs."""
    return {
        "data": {**data, "image_size": image_size},
        "model": {"backbone": BACKBONE, "weights": "none", "seed": SEED},
        "extract": {"enabled": True, "engine": "auto", "precision": "float32"},
        "train": {"epochs": EPOCHS, "fine_tune_layers": 0, "augment": False},
    }


def write_params(folder: Path, overrides: dict) -> None:
    """The repository's params.yaml with `overrides`, so everything not benchmarked stays the project's default."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


# --- 1. end to end -------------------------------------------------------------------------------------


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


def end_to_end_table(rows: list[dict]) -> str:
    headers = ["images", "train/val/test", "ours s", "prep/extr/train/eval s", "seed s", "seed/ours", "bound",
               "ours acc", "seed acc", "|diff|", "tolerance", "ok"]
    lines = [[row["images"], "/".join(str(row["counts"][split]) for split in paths.SPLITS),
              f"{row['ours_seconds']:.1f}", "/".join(f"{s:.0f}" for s in row["ours_stage_seconds"].values()),
              f"{row['seed_seconds']:.1f}", f"{row['ratio']:.2f}x", f"{row['forward_pass_bound']:.1f}x",
              f"{row['ours_accuracy']:.3f}", f"{row['seed_accuracy']:.3f}", f"{row['accuracy_difference']:.3f}",
              f"{row['accuracy_tolerance']:.3f}", "yes" if row["within_tolerance"] else "NO"] for row in rows]
    reached = [row["images"] for row in rows if row["ratio"] >= TARGET_RATIO]
    line = crossover(rows)
    measured = (f"smallest size measured reaching {TARGET_RATIO:.0f}x: {min(reached)} images" if reached
                else f"{TARGET_RATIO:.0f}x not reached at the sizes measured")
    extrapolated = (f"reaches {TARGET_RATIO:.0f}x from about {line['reaches_target_from_images']:,.0f} images"
                    if line["reaches_target_from_images"] else f"never reaches {TARGET_RATIO:.0f}x")
    size, engine = rows[0]["image_size"], rows[0]["engine"]
    notes = [f"DenseNet-121 at {size}x{size}, {EPOCHS} epochs, extract.engine auto ({engine}); wall clock of the four "
             f"stage processes against the one seed process; test is a sixth of the images, as in CIFAR-10.",
             "bound: the seed/ours ratio of backbone forward passes alone; start-up keeps the measured ratio below it.",
             "tolerance: two binomial standard errors of the test accuracy (at least one image).", measured,
             f"Extrapolated on lines through the smallest and largest run: ours {line['ours_fixed_seconds']:.0f} s + "
             f"{line['ours_seconds_per_image']:.3f} s/image, seed {line['seed_fixed_seconds']:.0f} s + "
             f"{line['seed_seconds_per_image']:.3f} s/image; the ratio tends to {line['limit_ratio']:.1f}x and "
             f"{extrapolated}."]
    return table(headers, lines) + "\n" + "\n".join(notes)


# --- 2. extraction throughput ----------------------------------------------------------------------------


def throughput(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="benchmark-throughput-") as temporary:
        folder = Path(temporary)
        run_module("benchmarks.throughput", folder, "throughput.json", "--backbones", args.backbones,
                   "--engines", args.engines, "--images", str(args.throughput_images),
                   "--batch-size", str(args.batch_size))
        return read_json(folder / "throughput.json")


def throughput_table(result: dict, count: int, batch_size: int) -> str:
    headers = ["backbone", "engine", "GFLOPs/img", "warm-up s", "ours img/s", "predict img/s", "ours/predict",
               "ours %peak", "predict %peak"]
    lines = [[row["backbone"], row["engine"], f"{row['gflops_per_image']:.2f}", f"{row['warm_up_seconds']:.1f}",
              f"{row['images_per_second']:.2f}", f"{row['predict_images_per_second']:.2f}", f"{row['ratio']:.2f}x",
              f"{row['peak_fraction']:.0%}", f"{row['predict_peak_fraction']:.0%}"] for row in result["rows"]]
    note = (f"224x224, {count} random images in batches of {batch_size} after one warm-up batch; dense matmul peak "
            f"{result['matmul_peak_gflops']:.1f} GFLOP/s (float32 2048x2048, best of 10 rounds).")
    return table(headers, lines) + "\n" + note


# --- 3. peak memory ----------------------------------------------------------------------------------------


def memory_table(rows: list[dict]) -> str:
    """prepare's and extract's peaks at the smallest and largest end-to-end size."""
    small, large = rows[0], rows[-1]
    headers = ["stage", "measure", f"{small['images']} images MB", f"{large['images']} images MB", "ratio", "ok"]
    lines = []
    for stage in ("prepare", "extract"):
        for measure in ("peak_anonymous", "peak_rss"):
            low, high = small["memory_mb"][stage][measure], large["memory_mb"][stage][measure]
            ok = high / low <= MEMORY_GROWTH_TARGET and high < MEMORY_CEILING_MB
            lines.append([stage, measure.replace("_", " "), f"{low:.0f}", f"{high:.0f}", f"{high / low:.2f}",
                          "yes" if ok else "NO"])
    size = small["image_size"]
    note = (f"At {size}x{size}. peak anonymous: the process's own memory (RssAnon, sampled every 50 ms); "
            f"peak rss: wait4's ru_maxrss, what `/usr/bin/time -f %M` reports, file pages the process held "
            f"included. Target: ratio <= {MEMORY_GROWTH_TARGET} and under {MEMORY_CEILING_MB / 1024:.0f} GB.")
    return table(headers, lines) + "\n" + note


# --- 4. training the head --------------------------------------------------------------------------------


def head_training(features: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="benchmark-head-") as temporary:
        folder = Path(temporary)
        run_module("benchmarks.head", folder, "head.json", "--features", str(features), "--epochs", str(EPOCHS))
        return read_json(folder / "head.json")


def head_table(result: dict) -> str:
    headers = ["features", "epochs", "ours s", "plain s (estimated)", "plain/ours", "plain epoch s", "ours epoch s"]
    ours, plain = result["ours_seconds"], result["plain_seconds_estimated"]
    line = [f"{result['train_features']:,} x {result['width']:,}", result["epochs"], f"{ours:.1f}", f"{plain:.1f}",
            f"{plain / ours:.2f}x", f"{result['plain_epoch_seconds']:.1f}", f"{ours / result['epochs']:.1f}"]
    note = (f"The seed's head, batch 32, with {result['val_features']:,} validation vectors. ours: stages.train's fit "
            f"(tf.data, many steps per call, XLA on one CPU, else op determinism; {EPOCHS} epochs timed whole). "
            f"plain: Keras's fit on in-memory arrays with its defaults; two epochs timed, the first with compilation, "
            f"and {EPOCHS} estimated as the first plus {EPOCHS - 1} times the second.")
    return table(headers, [line]) + "\n" + note


# --- running it --------------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells]
    return "\n".join([lines[0], "  ".join("-" * width for width in widths), *lines[1:]])


def machine() -> dict:
    """What the numbers depend on; the load average shows whether something else shared the CPU."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_at_start": os.getloadavg(),
            "python": platform.python_version(), "tensorflow": version("tensorflow"), "keras": version("keras")}


def machine_line(about: dict) -> str:
    """The load average before the run is other work's: well above 0, and it shared the CPU with the benchmarks."""
    return (f"{about['cpu']}, {about['cores']} cores, TensorFlow {about['tensorflow']}; "
            f"load average before the run {about['load_average_at_start'][0]:.1f}.")


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
        "1. End to end: our four stages against the seed's recipe\n" + end_to_end_table(results["end_to_end"]),
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
