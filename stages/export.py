"""Write the trained classifier in a serving format, with its class names beside it.

    python -m stages.export --format savedmodel   # models/serving/savedmodel/1/: TF Serving, tf.saved_model.load
    python -m stages.export --format openvino     # models/serving/openvino/: cifar10.xml + .bin, OpenVINO Runtime

The exported model is the whole classifier, as the .keras file is: RGB images with values 0-255, any size, in
(uint8 for the SavedModel's serving_default, float32 for the IR); class probabilities out.
"""
import argparse
import logging
from pathlib import Path

from stages.lib import paths, serving
from stages.lib.atomic import atomic_directory, write_json
from stages.lib.classifier import load_classifier
from stages.lib.errors import one_line_errors
from stages.lib.fast_exit import end_process
from stages.lib.quoting import shown

log = logging.getLogger("export")

FORMATS = ("savedmodel", "openvino")


def check_replaceable(out: Path) -> None:
    """An export replaces a folder only if it is empty or an earlier export (its record is inside): --out
    could name models/ itself, or any folder of the user's."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {shown(out)} is a file; name a folder")
    if out.is_dir() and any(out.iterdir()) and not paths.export_record(out).is_file():
        raise ValueError(f"--out {shown(out)} holds files that no export wrote; name a new or empty folder "
                         f"(an earlier export there would be replaced)")


def export(model_path: Path, serving_format: str, out: Path, version: int) -> Path:
    """Where the model went: `out`, or for a SavedModel its version's folder in `out`."""
    check_replaceable(out)
    log.info("loading %s", shown(model_path))
    model, classes, _ = load_classifier(model_path)
    with atomic_directory(out) as partial:
        if serving_format == "savedmodel":
            written, record = serving.write_saved_model(model, out, partial, version)
        else:
            written, record = serving.write_openvino(model, out, partial)
        write_json(partial / paths.CLASSES.name, classes)
        write_json(paths.export_record(partial), {"format": serving_format, "model": str(model_path), **record})
    return written


def version_number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a version number of 1 or more")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.export", description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--model", type=Path, default=paths.INFERENCE_MODEL, help="a .keras or .h5 model")
    parser.add_argument("--out", type=Path, help="the folder to write (default: models/serving/<format>)")
    parser.add_argument("--version", type=version_number, help="the SavedModel's version folder in --out "
                        "(default: 1); the other versions there are kept, as TF Serving expects")
    args = parser.parse_args(argv)
    if args.version is not None and args.format != "savedmodel":
        parser.error("--version applies to --format savedmodel only")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # its INFO names the folder written aside
    with one_line_errors():
        written = export(args.model, args.format, args.out or paths.SERVING / args.format, args.version or 1)
    print(f"exported {shown(args.model)} as {args.format} to {shown(written)}")


if __name__ == "__main__":
    main()
    end_process()
