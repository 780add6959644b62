"""Where a small run's seconds go: `python -m benchmarks.startup` runs the four stages on 40 synthetic images
at 224x224 (DenseNet-121, random weights, extract.engine auto, 10 epochs: options change them), each in a
process of its own as `dvc repro` runs them, and splits each stage's wall clock into phases:

import   Python, TensorFlow, Keras and the stage's own modules
build    building the backbone (stages.lib.models.build_backbone)
load     loading a saved model (stages.lib.classifier.load_model)
compile  tracing the extractor and converting it for its engine (stages.lib.engines.compile_engine)
extract  running the engine over the images, XLA's or OpenVINO's first-batch compilation included
         (stages.lib.features.extract_rows)
fit      Keras's fit, the traced step's compilation included
save     Keras's Model.save (train writes .keras and .h5)
other    everything else: reading and writing caches, metrics, plots, the process's start and exit
"""
import argparse
import functools
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.tables import table
from benchmarks.workload import run_module, write_params
from stages.lib.atomic import read_json
from stages.lib.fast_exit import end_process

STAGES = ("prepare", "extract", "train", "evaluate")
PHASES = ("import", "build", "load", "compile", "extract", "fit", "save", "other")
# phase: where the function it times is defined; patched there and where the stage's modules bound it.
TIMED = {"build": ("stages.lib.models", "build_backbone"), "load": ("stages.lib.classifier", "load_model"),
         "compile": ("stages.lib.engines", "compile_engine"), "extract": ("stages.lib.features", "extract_rows"),
         "fit": ("keras.src.backend.tensorflow.trainer", "TensorFlowTrainer.fit"),
         "save": ("keras.src.models.model", "Model.save")}


def timed(function, phase: str, seconds: dict):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[phase] += time.perf_counter() - start
    return wrapper


def timed_function(phase: str) -> tuple[object, str]:
    """The class or module that holds the function `phase` times, and the function's name there."""
    module_name, attribute = TIMED[phase]
    owner = importlib.import_module(module_name)
    *classes, name = attribute.split(".")
    for class_name in classes:
        owner = getattr(owner, class_name)
    return owner, name


def time_where_bound(phase: str, seconds: dict) -> None:
    """Wrap the function `phase` times where it is defined and wherever a module of this project bound it by
    name (`from stages.lib.models import build_backbone`), if the stage imported it at all."""
    if TIMED[phase][0] not in sys.modules:
        return
    owner, name = timed_function(phase)
    original = getattr(owner, name)
    wrapper = timed(original, phase, seconds)
    setattr(owner, name, wrapper)
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("stages."):
            for attribute, value in list(vars(module).items()):
                if value is original:
                    setattr(module, attribute, wrapper)


def stage_phases(stage: str, out: Path) -> None:
    """In the child: import the stage (only what it imports itself), time its phases, run its main(), write
    the phases' seconds to `out`."""
    started = time.perf_counter()
    seconds = dict.fromkeys(PHASES, 0.0)
    module = importlib.import_module(f"stages.{stage}")
    seconds["import"] = time.perf_counter() - started
    for phase in TIMED:
        time_where_bound(phase, seconds)
    module.main()
    seconds["other"] = time.perf_counter() - started - sum(seconds.values())
    out.write_text(json.dumps(seconds))


def measure(folder: Path, images: int, image_size: int, epochs: int, engine: str) -> dict:
    write_params(folder, {"data": {"source": "synthetic", "image_size": image_size, "limit": images // 2,
                                   "val_size": max(10, images // 8)},
                          "model": {"backbone": "densenet121", "weights": "none"},
                          "extract": {"engine": engine, "precision": "float32"}, "train": {"epochs": epochs}})
    (folder / "weights").mkdir()
    rows = {}
    for stage in STAGES:
        wall = run_module("benchmarks.startup", folder, "--child", stage).seconds
        rows[stage] = {**read_json(folder / f"{stage}.phases.json"), "wall": wall}
    return rows


def phase_table(rows: dict) -> str:
    lines = [[stage, *(f"{row[phase]:.1f}" for phase in PHASES), f"{sum(row[p] for p in PHASES):.1f}",
              f"{row['wall']:.1f}"] for stage, row in rows.items()]
    lines.append(["all", *(f"{sum(row[phase] for row in rows.values()):.1f}" for phase in PHASES),
                  f"{sum(sum(row[p] for p in PHASES) for row in rows.values()):.1f}",
                  f"{sum(row['wall'] for row in rows.values()):.1f}"])
    return table(["stage", *PHASES, "in process", "wall"], lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="synthetic images, half of them test")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--engine", default="auto", help="extract.engine")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)  # one stage, timed, in this process
    args = parser.parse_args(argv)
    if args.child:
        stage_phases(args.child, Path(f"{args.child}.phases.json"))
        end_process()  # as `python -m stages.<stage>` ends
    with tempfile.TemporaryDirectory(prefix="benchmark-startup-") as temporary:
        rows = measure(Path(temporary), args.images, args.image_size, args.epochs, args.engine)
    print(f"Seconds per stage and phase, {args.images} images at {args.image_size}x{args.image_size}, "
          f"DenseNet-121 (random weights), {args.epochs} epochs, extract.engine {args.engine}; wall: the stage's "
          f"process as seen from outside.")
    print(phase_table(rows))


if __name__ == "__main__":
    main()
