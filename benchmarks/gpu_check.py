"""The GPU check's measurements: extraction at 224x224 in float32 and mixed precision on each engine.

For each engine and precision, a process of its own extracts every split twice: images/s, and whether
the two runs wrote the same bytes (float32) or features within evaluate's tolerance of each other
(mixed). Then mixed against float32: the largest relative feature difference, and the test accuracy
of the head trained on each. Runs the real stages on synthetic data in a temporary folder; on a
machine without a GPU it runs the same checks on the CPU (small, with --images).

    python -m benchmarks.gpu_check [--images 10000] [--engines tensorflow,xla] [--epochs 3]
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from stages.lib import paths
from stages.lib.saved_model_check import FEATURE_TOLERANCE, relative_differences

REPO = Path(__file__).resolve().parents[1]


def write_params(folder: Path, images: int, epochs: int, backbone: str, engine: str = "tensorflow",
                 precision: str = "float32") -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source="synthetic", image_size=224, limit=images, val_size=max(10, images // 10))
    params["model"].update(backbone=backbone, weights="none")
    params["extract"].update(engine=engine, precision=precision)
    params["train"]["epochs"] = epochs
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage(module: str, folder: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=folder, env=env, capture_output=True,
                            text=True)
    if result.returncode:
        raise SystemExit(f"{module} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def extract_timed(out: str) -> None:
    """In a process of its own: extract every split into `out`, print images/s of the extraction alone."""
    from stages.lib.features import batch_starts, build_engine, extract_rows, prepared_images
    from stages.lib.params import load_params

    params = load_params()
    engine, width, _ = build_engine(params, 224)
    batch = params.extract.batch_size
    engine(np.zeros((batch, 224, 224, 3), np.uint8))  # compile and warm up outside the timing
    images, start = prepared_images(), time.perf_counter()
    extract_rows(engine, width, images, batch, batch_starts(len(images), batch), Path(out))
    print(json.dumps({"images": len(images), "images_per_s": len(images) / (time.perf_counter() - start)}))


def features(folder: Path) -> dict[str, np.ndarray]:
    return {split: np.load(folder / f"{split}.npy") for split in paths.SPLITS}


def largest_difference(features_a: dict, features_b: dict) -> float:
    return max(float(relative_differences(features_a[s], features_b[s]).max()) for s in paths.SPLITS)


def test_accuracy(work: Path, extracted: Path, images: int, epochs: int, backbone: str, precision: str) -> float:
    """The head trained and evaluated on features extracted at `precision`."""
    shutil.rmtree(work / paths.FEATURES, ignore_errors=True)
    shutil.copytree(extracted, work / paths.FEATURES)
    info = {"enabled": True, "image_size": 224, "backbone": backbone, "weights": "none", "seed": 42,
            "engine": "tensorflow", "precision": precision, "batch_size": 64}
    (work / paths.FEATURES_INFO).write_text(json.dumps(info))
    write_params(work, images, epochs, backbone, precision=precision)
    stage("stages.train", work)
    stage("stages.evaluate", work)
    return json.loads((work / paths.METRICS_FILE).read_text())["accuracy"]


def precisions() -> list[str]:
    from stages.lib.engines import cpu_has_bfloat16, gpu_available

    if gpu_available() or cpu_has_bfloat16():
        return ["float32", "mixed"]
    print("no GPU and no bfloat16 instructions on this CPU: float32 only")
    return ["float32"]


def two_runs(work: Path, engine: str, precision: str) -> tuple[Path, bool]:
    """Extract twice with one engine and precision: print both speeds and whether the runs agree."""
    speeds = []
    for attempt in (1, 2):
        out = work / f"{engine}-{precision}-{attempt}"
        out.mkdir()
        measured = json.loads(stage("benchmarks.gpu_check", work, "--extract-into", str(out)))
        speeds.append(measured["images_per_s"])
    first, second = features(work / f"{engine}-{precision}-1"), features(work / f"{engine}-{precision}-2")
    if precision == "float32":
        same = all(np.array_equal(first[s], second[s]) for s in paths.SPLITS)
        verdict = "byte-identical" if same else "DIFFERENT BYTES"
    else:
        difference = largest_difference(first, second)
        same = difference <= FEATURE_TOLERANCE["mixed"]
        verdict = f"within {difference:.2g} of each other (tolerance {FEATURE_TOLERANCE['mixed']})"
    print(f"{engine:>10} {precision:>7}: {speeds[0]:8.1f} and {speeds[1]:8.1f} images/s; two runs {verdict}")
    return work / f"{engine}-{precision}-1", same


def mixed_agrees(work: Path, float32: Path, mixed: Path, images: int, epochs: int, backbone: str) -> bool:
    """Mixed-precision features near float32 ones, and the head's test accuracy on them within noise."""
    difference = largest_difference(features(mixed), features(float32))
    accuracy = {p: test_accuracy(work, folder, images, epochs, backbone, p) for p, folder in
                (("float32", float32), ("mixed", mixed))}
    test_count = len(np.load(work / paths.labels("test"), mmap_mode="r"))
    p = accuracy["float32"]
    tolerance = 2 * math.sqrt(2 * p * (1 - p) / test_count) + 1 / test_count  # two standard errors of a difference
    agrees = difference <= FEATURE_TOLERANCE["mixed"] and abs(accuracy["mixed"] - p) <= tolerance
    print(f"mixed vs float32 (tensorflow): largest relative feature difference {difference:.3g} (tolerance "
          f"{FEATURE_TOLERANCE['mixed']}); test accuracy {accuracy['mixed']:.4f} vs {p:.4f} on {test_count} "
          f"images (tolerance {tolerance:.4f}): {'agrees' if agrees else 'DISAGREES'}")
    return agrees


def check(images: int, engines: list[str], epochs: int, backbone: str) -> bool:
    from stages.lib.engines import gpu_available

    print(f"device: {'GPU' if gpu_available() else 'CPU (no GPU found)'}; {images} synthetic images per split "
          f"at 224x224, {backbone} (random weights)")
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    write_params(work, images, epochs, backbone)
    stage("stages.prepare", work)
    ok, runs = True, {}
    for engine in engines:
        for precision in precisions():
            write_params(work, images, epochs, backbone, engine, precision)
            runs[engine, precision], same = two_runs(work, engine, precision)
            ok &= same
    if ("tensorflow", "mixed") in runs:
        ok &= mixed_agrees(work, runs["tensorflow", "float32"], runs["tensorflow", "mixed"], images, epochs, backbone)
    shutil.rmtree(work, ignore_errors=True)
    print("gpu_check:", "all checks passed" if ok else "SOME CHECKS FAILED")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="synthetic images per split (a limit)")
    parser.add_argument("--engines", default="tensorflow,xla", help="comma-separated extract.engine values")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the head for the accuracy comparison")
    parser.add_argument("--backbone", default="densenet121", help="model.backbone")
    parser.add_argument("--extract-into", help=argparse.SUPPRESS)  # one timed extraction, in its own process
    args = parser.parse_args()
    if args.extract_into:
        extract_timed(args.extract_into)
        return
    sys.exit(0 if check(args.images, args.engines.split(","), args.epochs, args.backbone) else 1)


if __name__ == "__main__":
    main()
