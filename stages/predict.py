"""Classify image files with the trained model: top-k classes and probabilities per image.

    python -m stages.predict photo.jpg more/ [--model models/cifar10.keras] [--top-k 3] [--json]
"""
import argparse
import json
import logging
import sys
from pathlib import Path

import keras
import numpy as np

from stages import paths
from stages.cli import one_line_errors
from stages.classifier import load_classifier
from stages.datasets import image_files, read_image
from stages.paths import printable


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


def classify(model: keras.Model, classes: list[str], path: Path, top_k: int) -> dict:
    # One image at a time: the model resizes each to its own input size.
    probabilities = model.predict(read_image(path)[None], verbose=0)[0]
    best = np.argsort(-probabilities)[:top_k]
    return {"image": str(path), "top": [{"class": classes[i], "probability": float(probabilities[i])} for i in best]}


def predict(model: keras.Model, classes: list[str], images: list[Path], top_k: int) -> list[dict]:
    """A result per image; an image that cannot be read gets an error in place of classes, and the rest go on."""
    results = []
    for path in images:
        try:
            results.append(classify(model, classes, path, top_k))
        except ValueError as error:
            results.append({"image": str(path), "error": str(error)})
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files or folders of them")
    parser.add_argument("--model", type=Path, default=paths.INFERENCE_MODEL, help="a .keras or .h5 model")
    parser.add_argument("--top-k", type=int, default=3, help="classes to show per image")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with one_line_errors():
        model, classes, _ = load_classifier(args.model)
        results = predict(model, classes, image_paths(args.images), max(1, args.top_k))
    if args.json:
        print(json.dumps(results, indent=2))
    for result in results:
        if "error" in result:
            print(f"error: {result['error']}", file=sys.stderr)
        elif not args.json:
            ranked = ", ".join(f"{top['class']} {top['probability']:.3f}" for top in result["top"])
            print(f"{printable(result['image'])}: {ranked}")
    if any("error" in result for result in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
