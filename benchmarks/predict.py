"""stages.predict on a folder of images: in batches, as it runs now, against one model call per image.

A DenseNet-121 classifier (random weights: the speed does not depend on them) at 224x224, saved as
train saves it, and CIFAR-sized 32x32 PNG files, which the model resizes to 224.
"""
import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from stages.lib import paths
from stages.lib.classifier import load_classifier, save_classifier
from stages.lib.images import read_image
from stages.lib.models import build_backbone, build_head, image_model
from stages.lib.prediction import predict

SIZE, CLASSES = 224, [f"class_{index}" for index in range(10)]


def one_call_per_image(model: keras.Model, files: list[Path]) -> list[np.ndarray]:
    """stages.predict before batching: model.predict on each image alone."""
    return [model.predict(read_image(path)[None], verbose=0)[0] for path in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary, contextlib.chdir(temporary):
        backbone = build_backbone("densenet121", "none", SIZE, seed=0)
        head = build_head(backbone.output.shape[-1], 256, len(CLASSES))
        save_classifier(image_model("densenet121", backbone, SIZE, head), CLASSES, {"head_layer": head.name})
        model, classes, _ = load_classifier(paths.INFERENCE_MODEL)
        rng = np.random.default_rng(0)
        files = [Path(f"{index}.png") for index in range(args.images)]
        for path in files:
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        one_call_per_image(model, files[:2]), predict(model, classes, files[:2], 3)  # both traced once first
        start = time.perf_counter()
        alone = one_call_per_image(model, files)
        alone_seconds = time.perf_counter() - start
        start = time.perf_counter()
        batched = predict(model, classes, files, 3)
        batched_seconds = time.perf_counter() - start
    agree = all(result["top"][0]["class"] == classes[int(np.argmax(row))] for result, row in zip(batched, alone))
    print("| way | images | seconds | images/s |\n| --- | --- | --- | --- |")
    ways = {"one model call per image": alone_seconds, "stages.predict, batches of 32": batched_seconds}
    for way, seconds in ways.items():
        print(f"| {way} | {args.images} | {seconds:.1f} | {args.images / seconds:.1f} |")
    print(f"batched / one per image: {alone_seconds / batched_seconds:.1f}x; same top class for every image: {agree}")


if __name__ == "__main__":
    main()
