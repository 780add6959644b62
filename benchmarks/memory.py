"""Peak resident memory of prepare and extract at two dataset sizes, as `/usr/bin/time -f %M` reports it.

Synthetic images at 224x224; extraction with MobileNetV2 (random weights, the TensorFlow engine), a
backbone fast enough for thousands of images here: the caches' memory does not depend on it.
"""
import argparse
import tempfile
from pathlib import Path

import yaml

from benchmarks.workload import REPO, run_module


def measure(folder: Path, images: int) -> dict:
    """`images` in all: data.limit caps train and test alike, so half of them are test images."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source="synthetic", image_size=224, val_size=100, limit=images // 2)
    params["model"].update(backbone="mobilenet_v2", weights="none")
    params["extract"].update(engine="tensorflow", batch_size=64)
    folder.mkdir()
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "weights").mkdir()
    return {stage: run_module(f"stages.{stage}", folder) for stage in ("prepare", "extract")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="2000,8000", help="two dataset sizes, comma-separated")
    small, large = map(int, parser.parse_args().images.split(","))
    with tempfile.TemporaryDirectory() as temporary:
        runs = {count: measure(Path(temporary, str(count)), count) for count in (small, large)}
    print(f"| stage | peak resident (ru_maxrss), {small:,} → {large:,} images | growth | peak own (RssAnon) |")
    print("| --- | --- | --- | --- |")
    for stage in ("prepare", "extract"):
        low, high = runs[small][stage], runs[large][stage]
        print(f"| `{stage}` | {low.peak_rss_mb:,.0f} → {high.peak_rss_mb:,.0f} MB | "
              f"{high.peak_rss_mb / low.peak_rss_mb:.2f}× | {low.peak_anonymous_mb:,.0f} → "
              f"{high.peak_anonymous_mb:,.0f} MB |")


if __name__ == "__main__":
    main()
