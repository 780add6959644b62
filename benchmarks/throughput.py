"""Extraction throughput (at 224x224 unless told otherwise): our engines against a plain model.predict of
the same extractor, and both against the machine's dense matmul peak.

benchmarks.run starts this in a process of its own and reads the JSON it writes: TensorFlow and the
models stay out of the orchestrating process, whose memory would otherwise inflate the peaks it measures.
"""
import argparse
import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from stages.lib.backbones import BACKBONES
from stages.lib.engine_choice import resolve
from stages.lib.engines import compile_engine
from stages.lib.models import build_backbone, image_model
from stages.lib.params import ENGINE_BACKENDS

SEED = 42  # random weights cost the same as trained ones; any seed will do


def forward_flops(model: keras.Model) -> int:
    """Floating-point operations of one image's forward pass through the convolutions and dense layers.

    Each kernel weight is one multiply-add per output position: a Conv2D kernel holds kh*kw*Cin/groups*Cout
    weights, a DepthwiseConv2D kernel kh*kw*C*depth_multiplier, a Dense kernel in*out.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            positions = math.prod(layer.output.shape[1:-1])
            total += 2 * positions * math.prod(layer.kernel.shape)
    return total


def matmul_peak_gflops(size: int = 2048, repeats: int = 3, rounds: int = 10) -> float:
    """The machine's dense float32 matmul rate: the ceiling a convolution can approach.

    The best of many short rounds, so that a moment when something else shares the CPU does not lower it.
    """
    a, b = tf.random.uniform((size, size)), tf.random.uniform((size, size))
    tf.matmul(a, b).numpy()  # starts the thread pool
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            product = tf.matmul(a, b)
        product.numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best / 1e9


def seconds_taken(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def in_batches(run_batch, images: np.ndarray, batch_size: int) -> None:
    for first in range(0, len(images), batch_size):
        run_batch(images[first:first + batch_size])


def engines_to_measure(requested: list[str], backbone: str) -> dict[str, str]:
    """Resolved engine -> how it was asked for ("auto -> xla"), each engine once."""
    labels = {}
    for engine in requested:
        resolved = resolve(engine, backbone)
        labels.setdefault(resolved, f"auto -> {resolved}" if engine == "auto" else engine)
    return labels


def backbone_throughput(name: str, engines: list[str], count: int, batch_size: int, peak_gflops: float,
                        size: int = 224) -> list[dict]:
    """Our engines and a plain predict, on the extractor stages.extract builds and the same random images."""
    keras.backend.clear_session()
    extractor = image_model(name, build_backbone(name, "none", size, SEED), size, input_size=size)
    gflops_per_image = forward_flops(extractor) / 1e9
    images = np.random.default_rng(SEED).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    extractor.predict(images[:batch_size], batch_size=batch_size, verbose=0)  # traces predict's function
    predict_rate = count / seconds_taken(lambda: extractor.predict(images, batch_size=batch_size, verbose=0))
    rows = []
    for engine, label in engines_to_measure(engines, name).items():
        start = time.perf_counter()
        run_batch = compile_engine(extractor, engine, "float32")
        run_batch(images[:batch_size])  # the warm-up batch: tracing, and XLA's or OpenVINO's compilation
        warm_up = time.perf_counter() - start
        rate = count / seconds_taken(lambda: in_batches(run_batch, images, batch_size))
        rows.append({"backbone": name, "engine": label, "image_size": size, "gflops_per_image": gflops_per_image,
                     "warm_up_seconds": warm_up, "images_per_second": rate, "predict_images_per_second": predict_rate,
                     "ratio": rate / predict_rate, "peak_fraction": rate * gflops_per_image / peak_gflops,
                     "predict_peak_fraction": predict_rate * gflops_per_image / peak_gflops})
    return rows


def names(allowed):
    def parse(text: str) -> list[str]:
        chosen = [part for part in text.split(",") if part]
        unknown = [name for name in chosen if name not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(unknown)}; choose from {', '.join(allowed)}")
        return chosen
    return parse


def parser() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0])
    options.add_argument("out", type=Path, help="the JSON file to write")
    options.add_argument("--backbones", type=names(BACKBONES), default=["densenet121", "vgg16", "convnext_tiny"])
    on_tensorflow = ["auto", *(engine for engine, backend in ENGINE_BACKENDS.items() if backend == "tensorflow")]
    options.add_argument("--engines", type=names(on_tensorflow), default=["auto"],
                         help="each compiles the backbone once more")
    options.add_argument("--images", type=int, default=32, help="timed images per engine")
    options.add_argument("--batch-size", type=int, default=16)
    options.add_argument("--image-size", type=int, default=224)
    return options


def main() -> None:
    args = parser().parse_args()
    peak = matmul_peak_gflops()
    rows = [row for name in args.backbones
            for row in backbone_throughput(name, args.engines, args.images, args.batch_size, peak, args.image_size)]
    args.out.write_text(json.dumps({"matmul_peak_gflops": peak, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
