"""Training the head on cached features: the train stage's own fit against Keras's plain fit on arrays.

Both train the seed's head (Dense 256 ReLU -> Dense 10 softmax, Adam, batch 32) on the same random
features, as wide as DenseNet-121's. benchmarks.run starts this in a process of its own.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from dvclive import Live

from benchmarks.workload import EPOCHS, SEED, VAL_SHARE
from stages.lib.batches import Batches
from stages.lib.models import build_head
from stages.lib.strategy import make_reproducible
from stages.lib.fitting import fit

WIDTH = 1024  # DenseNet-121's pooled features
UNITS, CLASSES, BATCH, RATE = 256, 10, 32, 0.001  # the seed's head, batch size and Adam


def random_features(count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    features = rng.standard_normal((count, WIDTH), dtype=np.float32)
    return features, np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, count)]


def plain_epoch_seconds(features: np.ndarray, labels: np.ndarray, val_count: int) -> list[float]:
    """Keras's defaults, as the seed calls fit: arrays in memory, shuffled by Keras, one step per call."""
    keras.utils.set_random_seed(SEED)
    head = build_head(WIDTH, UNITS, CLASSES)
    head.compile(optimizer=keras.optimizers.Adam(RATE), loss="categorical_crossentropy", metrics=["accuracy"])
    seconds = []
    for _ in range(2):  # the first epoch also traces and compiles
        start = time.perf_counter()
        head.fit(features[val_count:], labels[val_count:], batch_size=BATCH, epochs=1, verbose=0,
                 validation_data=(features[:val_count], labels[:val_count]))
        seconds.append(time.perf_counter() - start)
    return seconds


def ours_seconds(features: np.ndarray, labels: np.ndarray, val_count: int, epochs: int) -> float:
    """stages.train's fit, with its batches, callbacks, dvclive log and reproducibility settings."""
    xla = make_reproducible(head_alone=True)
    keras.utils.set_random_seed(SEED)
    head = build_head(WIDTH, UNITS, CLASSES)
    train = Batches(features[val_count:], labels[val_count:], BATCH, SEED)
    val = Batches(features[:val_count], labels[:val_count], BATCH, None)
    with tempfile.TemporaryDirectory() as log, Live(dir=log, dvcyaml=False, save_dvc_exp=False) as live:
        start = time.perf_counter()
        fit(head, "learning_rate", RATE, epochs, train, val, live, on_features=True, xla=xla)
        return time.perf_counter() - start


def main() -> None:
    options = argparse.ArgumentParser(prog="python -m benchmarks.head", description=__doc__.splitlines()[0])
    options.add_argument("out", type=Path, help="the JSON file to write")
    options.add_argument("--features", type=int, default=50_000, help="train and val together (CIFAR-10's 50,000)")
    options.add_argument("--epochs", type=int, default=EPOCHS)
    args = options.parse_args()
    features, labels = random_features(args.features)
    val_count = round(args.features * VAL_SHARE)
    plain = plain_epoch_seconds(features, labels, val_count)  # first: ours may set op determinism, for good
    ours = ours_seconds(features, labels, val_count, args.epochs)
    result = {"train_features": args.features - val_count, "val_features": val_count, "width": WIDTH,
              "epochs": args.epochs, "ours_seconds": ours, "plain_first_epoch_seconds": plain[0],
              "plain_epoch_seconds": plain[1], "plain_seconds_estimated": plain[0] + (args.epochs - 1) * plain[1]}
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
