"""extract on Ray Data against the in-process run, on this machine: Ray's start-up, images/s with 1 and 2 actors
(after the first batch, as extract's timing counts it), and the driver's peak memory at two numbers of images.

Each Ray run is a fresh process that starts a local Ray of N CPUs (N actors) and runs stages.extract in it;
the in-process run is `python -m stages.extract`. Synthetic images, `weights: none`.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.workload import REPO, run_module, write_params

ON_RAY = """
import json, resource, sys, time
import ray
started = time.perf_counter()
ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, log_to_driver=False)
startup = time.perf_counter() - started
from stages import extract
from stages.lib.params import load_params
extract.run(load_params())
timing = json.load(open("metrics/timing/extract.json"))["extract"]
print(json.dumps({**timing, "startup_seconds": startup,
                  "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def prepared(folder: Path, images: int, image_size: int, engine: str) -> Path:
    """`images` synthetic images (half of them test) prepared in `folder`, with the params extract reads."""
    folder.mkdir()
    (folder / "weights").mkdir()
    write_params(folder, {"data": {"source": "synthetic", "image_size": image_size, "val_size": 100,
                                   "limit": images // 2},
                          "model": {"backbone": "densenet121", "weights": "none"},
                          "extract": {"engine": engine, "batch_size": 64}})
    run_module("stages.prepare", folder)
    return folder


def in_process(folder: Path) -> dict:
    finished = run_module("stages.extract", folder)
    return {**json.loads((folder / "metrics/timing/extract.json").read_text())["extract"],
            "driver_peak_rss_mb": finished.peak_rss_mb}


def on_ray(folder: Path, actors: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": "local"}
    result = subprocess.run([sys.executable, "-c", ON_RAY, str(actors)], cwd=folder, env=env, capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--engine", default="auto", help="extract.engine (auto: OpenVINO for DenseNet-121 on a CPU)")
    parser.add_argument("--memory-images", default="2000,8000", help="driver memory at these numbers of images")
    parser.add_argument("--memory-image-size", type=int, default=64, help="small: the driver holds batches only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = prepared(Path(temporary) / "rate", args.images, args.image_size, args.engine)
        here = in_process(folder)
        print(f"DenseNet-121, {args.engine}, batch 64, {args.image_size}x{args.image_size}, "
              f"{here['images']} images, {os.cpu_count()} CPUs")
        print(f"  in-process: {here['images_per_second']:.1f} images/s")
        for actors in (1, 2):
            ray_run = on_ray(folder, actors)
            print(f"  Ray, {actors} actor(s): {ray_run['images_per_second']:.1f} images/s "
                  f"({ray_run['images_per_second'] / here['images_per_second']:.2f}x in-process); start-up "
                  f"{ray_run['startup_seconds']:.1f} s, then {ray_run['first_batch_seconds']:.1f} s to the first "
                  f"batch (actors built)")
        peaks = []
        for count in map(int, args.memory_images.split(",")):
            folder = prepared(Path(temporary) / f"memory-{count}", count, args.memory_image_size, args.engine)
            peaks.append(on_ray(folder, 1)["driver_peak_rss_mb"])
            print(f"  driver's peak RSS, {count} images at {args.memory_image_size}x{args.memory_image_size}, "
                  f"1 actor: {peaks[-1]:.0f} MB")
        print(f"  largest / smallest: {max(peaks) / min(peaks):.2f}x")


if __name__ == "__main__":
    main()
