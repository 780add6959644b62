"""Classify image files with the trained model: top-k classes and probabilities per image.

    python -m stages.predict photo.jpg more/ [--model models/cifar10.keras] [--top-k 3] [--json]
"""
import argparse
import json
import logging
from pathlib import Path

import keras
import numpy as np

from stages import paths
from stages.atomic import read_json
from stages.cli import one_line_errors
from stages.datasets import IMAGE_SUFFIXES, read_image


def image_paths(arguments: list[str]) -> list[Path]:
    """Files as given; folders expand to the image files inside them, sorted."""
    found = []
    for argument in map(Path, arguments):
        if argument.is_dir():
            found += sorted(p for p in argument.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif argument.exists():
            found.append(argument)
        else:
            raise FileNotFoundError(f"no image at {argument}")
    if not found:
        raise FileNotFoundError(f"no image files in {', '.join(arguments)}")
    return found


def load_classifier(model_path: Path) -> tuple[keras.Model, list[str]]:
    if not model_path.is_file():
        raise FileNotFoundError(f"no model at {model_path}; run `dvc repro` first, or pass --model PATH")
    classes_path = paths.classes_beside(model_path)
    if not classes_path.is_file():
        raise FileNotFoundError(f"no class names at {classes_path}; they are saved beside the model by the train stage")
    return keras.models.load_model(model_path, safe_mode=True), read_json(classes_path)


def predict(model: keras.Model, classes: list[str], images: list[Path], top_k: int) -> list[dict]:
    results = []
    for path in images:
        # One image at a time: the model resizes each to its own input size.
        probabilities = model.predict(read_image(path)[None], verbose=0)[0]
        best = np.argsort(-probabilities)[:top_k]
        results.append({"image": str(path),
                        "top": [{"class": classes[i], "probability": float(probabilities[i])} for i in best]})
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
        model, classes = load_classifier(args.model)
        results = predict(model, classes, image_paths(args.images), max(1, args.top_k))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        ranked = ", ".join(f"{top['class']} {top['probability']:.3f}" for top in result["top"])
        print(f"{result['image']}: {ranked}")


if __name__ == "__main__":
    main()
