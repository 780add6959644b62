"""The seed's recipe as one script: every image resized into memory as float32, the frozen backbone and
the head in one Keras model, trained on images for every epoch, then evaluated on the test split.

Run as `python -m benchmarks.seed_recipe RESULT.json` in a folder holding a params.yaml (benchmarks.run
does this); it reads the same images as stages.prepare and writes its test accuracy to RESULT.json.
"""
import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

from stages.lib.models import build_backbone, build_head, image_model
from stages.lib.datasets import ImageFiles, Split
from stages.lib.params import load_params
from stages.lib.sources import load_source, split_source


def in_memory(split: Split, size: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole split resized in one go and kept as float32, with one-hot labels, as the seed did."""
    pixels = np.stack(split.images.decode()) if isinstance(split.images, ImageFiles) else split.images
    resized = keras.layers.Resizing(size, size)(pixels.astype(np.float32))
    return keras.ops.convert_to_numpy(resized), np.eye(classes, dtype=np.float32)[split.labels]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seed_recipe", description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="the JSON file to write")
    result = parser.parse_args().result
    started = time.perf_counter()
    params = load_params()
    data, model, train = params.data, params.model, params.train
    source = load_source(data)  # the splits stages.prepare caches
    named_splits, classes = split_source(source, data), len(source.classes)
    arrays = {name: in_memory(split, data.image_size, classes) for name, split in named_splits.items()}
    resized = time.perf_counter()
    # Seeded as stages.train seeds them, so both sides start from the same backbone and head.
    backbone = build_backbone(model.backbone, model.weights, data.image_size, model.seed)
    keras.utils.set_random_seed(train.seed)
    head = build_head(backbone.output.shape[-1], model.head_units, classes)
    classifier = image_model(model.backbone, backbone, data.image_size, head, input_size=data.image_size)
    classifier.compile(optimizer=keras.optimizers.Adam(train.learning_rate), loss="categorical_crossentropy",
                       metrics=["accuracy"])
    classifier.fit(*arrays["train"], batch_size=train.batch_size, epochs=train.epochs,
                   validation_data=arrays["val"], verbose=2)
    fitted = time.perf_counter()
    _, accuracy = classifier.evaluate(*arrays["test"], batch_size=train.batch_size, verbose=0)
    seconds = {"read_and_resize": resized - started, "build_and_fit": fitted - resized,
               "evaluate": time.perf_counter() - fitted}
    result.write_text(json.dumps({"accuracy": float(accuracy), "seconds": seconds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
