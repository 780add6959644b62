"""The two heads side by side on the same cached features: test accuracy and training seconds.

For each dataset (the synthetic set, and scikit-learn's handwritten digits written as PNG files, a
folder dataset of real images), prepare and extract run once; then train (head mlp, then linear) and
evaluate, each timed: the head's fit alone and the whole train stage. DenseNet-121 with random
weights (nothing can be downloaded here) at 32x32.

    python -m benchmarks.linear_probe [--images 2000]
"""
import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from sklearn.datasets import load_digits

from stages import evaluate, extract, prepare, train

from stages.lib import heads, paths
from stages.lib.scores import accuracy_interval
from stages.lib.params import load_params

SHIPPED_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
# Per head, the function that fits it: the seconds spent in it are the head's fit alone.
HEAD_FIT = {"mlp": (train, "fit"), "linear": (heads, "fit_linear_probe")}


def write_params(folder: Path, data: dict, head: str) -> None:
    params = yaml.safe_load(SHIPPED_PARAMS.read_text())
    params["data"].update(image_size=32, **data)
    params["model"]["weights"] = "none"
    params["extract"]["engine"] = "tensorflow"
    params["train"]["head"] = head
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def write_digits(root: Path) -> None:
    """1,797 8x8 grayscale digits as PNG files in train/<digit>/, scaled from 0-16 to 0-255."""
    digits = load_digits()
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / "train" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rint(image * 255 / 16).astype(np.uint8)).save(folder / f"{index}.png")


@contextlib.contextmanager
def timing(module, name: str):
    """Seconds spent in `module.name` while the block runs: the head's fit alone, within the train stage.
    The block must call it, or there would be no figure to give."""
    seconds, original = [], getattr(module, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        result = original(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
        return result

    setattr(module, name, timed)
    try:
        yield seconds
    finally:
        setattr(module, name, original)
    if not seconds:
        raise RuntimeError(f"{module.__name__}.{name} was never called: HEAD_FIT names the wrong function")


def compare(folder: Path, data: dict) -> list[dict]:
    rows = []
    with contextlib.chdir(folder):
        write_params(folder, data, "mlp")
        params = load_params()
        prepare.run(params)
        extract.run(params)
        for head in ("mlp", "linear"):
            write_params(folder, data, head)
            with timing(*HEAD_FIT[head]) as fit_seconds:
                start = time.perf_counter()
                train.run(load_params())
            stage_seconds = time.perf_counter() - start
            evaluate.run(load_params())
            metrics = json.loads(paths.METRICS_FILE.read_text())
            tested = sum(1 for _ in json.loads(paths.CONFUSION.read_text()))
            rows.append({"head": head, "accuracy": metrics["accuracy"], "test_images": tested,
                         "fit_seconds": sum(fit_seconds), "train_stage_seconds": stage_seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="synthetic images per split")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        (root / "synthetic").mkdir()
        write_digits(root / "digits")
        (root / "digits-run").mkdir()
        datasets = {
            f"synthetic ({args.images} per split)": (root / "synthetic", {"source": "synthetic", "limit": args.images,
                                                                          "val_size": args.images // 10}),
            "digits (1,797 PNG files)": (root / "digits-run", {"source": "folder", "path": str(root / "digits"),
                                                              "limit": None, "val_size": 180}),
        }
        print("| data | head | test accuracy | 95 % interval | head fit, s | train stage, s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, (folder, data) in datasets.items():
            for row in compare(folder, data):
                low, high = accuracy_interval(row["accuracy"], row["test_images"])
                print(f"| {name} | {row['head']} | {row['accuracy']:.4f} | {low:.4f}–{high:.4f} "
                      f"| {row['fit_seconds']:.2f} | {row['train_stage_seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
