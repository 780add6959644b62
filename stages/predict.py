"""Classify image files with the trained model: top-k classes and probabilities per image.

    python -m stages.predict photo.jpg more/ [--model models/cifar10.keras] [--top-k 3] [--json] [--strict]

Images go through the model in batches; one that cannot be read is skipped with a warning naming it
(an error, and exit status 1, with --strict).
"""
import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stages import paths
from stages.cli import end_process, one_line_errors
from stages.classifier import load_classifier, predict_padded
from stages.frameworks import keras
from stages.images import image_files, read_image
from stages.paths import printable

BATCH_SIZE = 32  # images per call of the model


def image_paths(arguments: list[str]) -> list[Path]:
    """Files as given; folders expand to the image files in them and their sub-folders, as for a folder dataset."""
    found = []
    for argument in map(Path, arguments):
        if argument.is_dir():
            found += image_files(argument)
        elif argument.exists():
            found.append(argument)
        else:
            raise FileNotFoundError(f"no image at {printable(argument)}")
    if not found:
        raise FileNotFoundError(f"no image files in {printable(', '.join(arguments))}")
    return found


def host_resize(model: keras.Model):
    """The model's own resize layer, to run on each image before batching, when the model has one (the
    pipeline's do): every image then has the same shape, and the model's resize of it changes nothing."""
    try:
        resize = keras.layers.Resizing.from_config(model.get_layer("resize").get_config())
    except ValueError:
        return lambda pixels: pixels  # a model without it: images of the same size still batch together
    return lambda pixels: keras.ops.convert_to_numpy(resize(pixels[None].astype(np.float32)))[0]


def ranked(classes: list[str], probabilities: np.ndarray, top_k: int) -> list[dict]:
    best = np.argsort(-probabilities)[:top_k]
    return [{"class": classes[i], "probability": float(probabilities[i])} for i in best]


def predict(model: keras.Model, classes: list[str], images: list[Path], top_k: int,
            batch_size: int = BATCH_SIZE) -> list[dict]:
    """A result per image, in the order given; an image that cannot be read gets an error in place of
    classes, and the rest go on."""
    results: list[dict] = [{"image": str(path)} for path in images]
    waiting: dict[tuple, list[tuple[int, np.ndarray]]] = {}  # per image shape: (index, pixels)
    resize = host_resize(model)
    batch_size = min(batch_size, len(images))

    def classify(batch: list[tuple[int, np.ndarray]]) -> None:
        probabilities = predict_padded(model, np.stack([pixels for _, pixels in batch]), batch_size)
        for (index, _), row in zip(batch, probabilities):
            results[index]["top"] = ranked(classes, row, top_k)

    for index, path in enumerate(tqdm(images, desc="predict", unit="img", disable=None)):
        try:
            pixels = resize(read_image(path))
        except ValueError as error:
            results[index]["error"] = str(error)
            continue
        waiting.setdefault(pixels.shape, []).append((index, pixels))
        if sum(map(len, waiting.values())) == batch_size:  # at most a batch of images in memory
            for batch in waiting.values():
                classify(batch)
            waiting.clear()
    for batch in waiting.values():
        classify(batch)
    return results


def report(results: list[dict], as_json: bool, strict: bool) -> None:
    """The answers on stdout, as text or one JSON document; each unreadable image a line on stderr."""
    if as_json:
        print(json.dumps(results, indent=2))
    for result in results:
        if "error" in result:
            print(f"error: {result['error']}" if strict else f"warning: {result['error']} (skipped)",
                  file=sys.stderr)
        elif not as_json:
            shown = ", ".join(f"{top['class']} {top['probability']:.3f}" for top in result["top"])
            print(f"{printable(result['image'])}: {shown}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files or folders of them")
    parser.add_argument("--model", type=Path, default=paths.INFERENCE_MODEL, help="a .keras or .h5 model")
    parser.add_argument("--top-k", type=int, default=3, help="classes to show per image")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any image cannot be read")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with one_line_errors():
        images = image_paths(args.images)  # a wrong path fails before seconds of loading the model
        model, classes, _ = load_classifier(args.model)
        results = predict(model, classes, images, max(1, args.top_k))
        report(results, args.json, args.strict)
    if args.strict and any("error" in result for result in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
    end_process()
