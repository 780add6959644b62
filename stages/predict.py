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

from stages.lib import paths
from stages.lib.classifier import load_classifier
from stages.lib.errors import one_line_errors
from stages.lib.fast_exit import end_process
from stages.lib.images import image_files
from stages.lib.prediction import predict
from stages.lib.quoting import shown


def image_paths(arguments: list[str]) -> list[Path]:
    """Files as given; folders expand to the image files in them and their sub-folders, as for a folder dataset."""
    found = []
    for argument in map(Path, arguments):
        if argument.is_dir():
            found += image_files(argument)
        elif argument.exists():
            found.append(argument)
        else:
            raise FileNotFoundError(f"no image at {shown(argument)}")
    if not found:
        raise FileNotFoundError(f"no image files in {', '.join(shown(Path(argument)) for argument in arguments)}")
    return found


def report(results: list[dict], as_json: bool, strict: bool) -> None:
    """The answers on stdout, as text or one JSON document; each unreadable image a line on stderr."""
    if as_json:
        print(json.dumps(results, indent=2))
    for result in results:
        if "error" in result:
            print(f"error: {result['error']}" if strict else f"warning: {result['error']} (skipped)",
                  file=sys.stderr)
        elif not as_json:
            answers = ", ".join(f"{shown(top['class'], quoted=False)} {top['probability']:.3f}"
                                for top in result["top"])
            print(f"{shown(Path(result['image']))}: {answers}")


def positive_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a count of 1 or more")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files or folders of them")
    parser.add_argument("--model", type=Path, default=paths.INFERENCE_MODEL, help="a .keras or .h5 model")
    parser.add_argument("--top-k", type=positive_count, default=3, help="classes to show per image")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any image cannot be read")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with one_line_errors():
        images = image_paths(args.images)  # a wrong path fails before seconds of loading the model
        model, classes, _ = load_classifier(args.model)
        results = predict(model, classes, images, args.top_k)
        report(results, args.json, args.strict)
    if args.strict and any("error" in result for result in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
    end_process()
