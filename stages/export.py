"""Write the trained classifier in a serving format, with its class names beside it.

    python -m stages.export --format savedmodel   # models/serving/savedmodel/: TF Serving, tf.saved_model.load
    python -m stages.export --format openvino     # models/serving/openvino/: cifar10.xml + .bin, OpenVINO Runtime

The exported model is the whole classifier, as the .keras file is: float32 RGB images with values 0-255,
any size, in; class probabilities out.
"""
import argparse
import logging
import os
from pathlib import Path

from stages.lib import paths
from stages.lib.atomic import OUT_OF_SPACE, atomic_directory, write_json
from stages.lib.classifier import load_classifier
from stages.lib.errors import one_line_errors
from stages.lib.fast_exit import end_process
from stages.lib.quoting import shown

# Keras's own exporters: format name on the command line -> Keras's name, and the file in the folder.
FORMATS = {"savedmodel": ("tf_saved_model", "."), "openvino": ("openvino", "cifar10.xml")}


def check_replaceable(out: Path) -> None:
    """An export replaces a folder only if it is empty or an earlier export (its record is inside): --out
    could name models/ itself, or any folder of the user's."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {shown(out)} is a file; name a folder")
    if out.is_dir() and any(out.iterdir()) and not paths.export_record(out).is_file():
        raise ValueError(f"--out {shown(out)} holds files that no export wrote; name a new or empty folder "
                         f"(an earlier export there would be replaced)")


def exported(model, keras_format: str, target: Path, out: Path) -> None:
    """Keras's exporter, whose failures (a full disk among them) come as TensorFlow's or OpenVINO's own
    errors: one line each, a full disk named as such when their text says so."""
    try:
        model.export(str(target), format=keras_format, verbose=False)
    except Exception as error:
        for code in OUT_OF_SPACE:
            if os.strerror(code) in str(error):
                raise OSError(code, os.strerror(code), str(out)) from error
        raise ValueError(f"writing {shown(out)} failed ({shown(error)}); check the free space and permissions "
                         f"of its folder") from error


def export(model_path: Path, serving_format: str, out: Path) -> Path:
    check_replaceable(out)
    model, classes, _ = load_classifier(model_path)
    keras_format, name = FORMATS[serving_format]
    with atomic_directory(out) as partial:
        exported(model, keras_format, partial / name, out)
        write_json(partial / paths.CLASSES.name, classes)
        write_json(paths.export_record(partial), {"format": serving_format, "model": str(model_path)})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.export", description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=sorted(FORMATS), required=True)
    parser.add_argument("--model", type=Path, default=paths.INFERENCE_MODEL, help="a .keras or .h5 model")
    parser.add_argument("--out", type=Path, help="the folder to write (default: models/serving/<format>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with one_line_errors():
        out = export(args.model, args.format, args.out or paths.SERVING / args.format)
    print(f"exported {shown(args.model)} as {args.format} to {shown(out)}")


if __name__ == "__main__":
    main()
    end_process()
