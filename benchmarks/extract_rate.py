"""Extraction inside the pipeline against the engine's own rate, side by side in one run.

The engine's rate is benchmarks.throughput's (random images already in memory, batches back to back); the
pipeline's is the extract stage's `images_per_second` (metrics/timing/extract.json) on synthetic images
cached by prepare, both after their first batch, which also compiles. Same backbone, size, batch and engine.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.workload import REPO, run_module


def engine_rate(backbone: str, engine: str, images: int, batch_size: int, image_size: int, out: Path) -> float:
    subprocess.run([sys.executable, "-m", "benchmarks.throughput", str(out), "--backbones", backbone, "--engines",
                    engine, "--images", str(images), "--batch-size", str(batch_size), "--image-size", str(image_size)],
                   check=True, cwd=REPO, capture_output=True)
    return json.loads(out.read_text())["rows"][0]["images_per_second"]


def pipeline_rate(folder: Path, backbone: str, engine: str, images: int, batch_size: int, image_size: int) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source="synthetic", image_size=image_size, val_size=100, limit=images // 2)
    params["model"].update(backbone=backbone, weights="none")
    params["extract"].update(engine=engine, batch_size=batch_size)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "weights").mkdir()
    run_module("stages.prepare", folder)
    run_module("stages.extract", folder)
    return json.loads((folder / "metrics/timing/extract.json").read_text())["extract"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="densenet121")
    parser.add_argument("--engine", default="xla")
    parser.add_argument("--images", type=int, default=1000, help="images through the pipeline (half of them test)")
    parser.add_argument("--engine-images", type=int, default=256, help="timed images for the engine's own rate")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        engine = engine_rate(args.backbone, args.engine, args.engine_images, args.batch_size,
                             args.image_size, Path(temporary) / "throughput.json")
        pipeline = pipeline_rate(Path(temporary), args.backbone, args.engine, args.images, args.batch_size,
                                 args.image_size)
    print(f"{args.backbone}, {args.engine}, batch {args.batch_size}, {args.image_size}x{args.image_size}:")
    print(f"  engine alone (benchmarks.throughput, {args.engine_images} images): {engine:.1f} images/s")
    print(f"  inside the pipeline (stages.extract, {pipeline['images']} images): {pipeline['images_per_second']:.1f} "
          f"images/s after a first batch of {pipeline['first_batch_seconds']:.1f} s; "
          f"{pipeline['seconds']:.1f} s in all")
    print(f"  pipeline / engine: {pipeline['images_per_second'] / engine:.0%}")


if __name__ == "__main__":
    main()
