"""The classifier in serving formats, each with one input, `image` (RGB, values 0-255, any size), and one
output, `probabilities`.

SavedModel, in TF Serving's layout <out>/<version>/: signature `serving_default` takes uint8 images (what an
image decoder gives), `serving_float32` float32 ones. OpenVINO IR, <out>/cifar10.xml and .bin: float32 images.
"""
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from stages.lib.atomic import OUT_OF_SPACE
from stages.lib.frameworks import keras, tf
from stages.lib.quoting import shown

log = logging.getLogger("export")

IMAGE, PROBABILITIES = "image", "probabilities"
SIGNATURES = {"serving_default": tf.uint8, "serving_float32": tf.float32}
OPENVINO_FILE = "cifar10.xml"
# OpenVINO's CPU plugin computes in bf16 where the CPU has it, unless told otherwise: probabilities 2e-4 (the
# tests' small VGG-16) to 1.5e-2 (DenseNet-121) away from the .keras model's, against under 1e-6 in f32.
# The IR cannot carry the hint (the plugin ignores it in the model's rt_info): its user must give it.
PRECISION_HINT = "f32"


def image_spec(dtype: tf.DType) -> tf.TensorSpec:
    return tf.TensorSpec([None, None, None, 3], dtype, name=IMAGE)


def probabilities_function(model: keras.Model):
    """The model on images of any numeric type; the dict names its output."""
    return lambda image: {PROBABILITIES: model(tf.cast(image, tf.float32), training=False)}


@contextmanager
def written_to(out: Path):
    """TensorFlow's and OpenVINO's writers fail with their own errors (a full disk among them): one line
    each, a full disk named as such when their text says so."""
    try:
        yield
    except Exception as error:
        for code in OUT_OF_SPACE:
            if os.strerror(code) in str(error):
                raise OSError(code, os.strerror(code), str(out)) from error
        raise ValueError(f"writing {shown(out)} failed ({shown(error)}); check the free space and permissions "
                         f"of its folder") from error


def linked_or_copied(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


def keep_other_versions(out: Path, partial: Path, version: int) -> None:
    """TF Serving serves the highest version in the folder and can go back to an earlier one: the versions
    already in `out` go into its replacement, all but the one being written."""
    for earlier in sorted(out.iterdir()) if out.is_dir() else ():
        if earlier.is_dir() and earlier.name.isdigit() and int(earlier.name) != version:
            shutil.copytree(earlier, partial / earlier.name, copy_function=linked_or_copied)


def write_saved_model(model: keras.Model, out: Path, partial: Path, version: int) -> tuple[Path, dict]:
    """The model as version `version` in `partial`, which will replace `out`: where it went, and its record."""
    log.info("writing SavedModel version %d to %s", version, shown(out))
    keep_other_versions(out, partial, version)
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, dtype in SIGNATURES.items():
        archive.add_endpoint(name, probabilities_function(model), input_signature=[image_spec(dtype)])
    with written_to(out):
        archive.write_out(str(partial / str(version)), verbose=False)
    signatures = {name: f"{IMAGE} {dtype.name} [N, H, W, 3] -> {PROBABILITIES}" for name, dtype in SIGNATURES.items()}
    return out / str(version), {"version": version, "signatures": signatures}


def write_openvino(model: keras.Model, out: Path, partial: Path) -> tuple[Path, dict]:
    """Converted from a traced function of the model, not by Keras's exporter: in that IR, the resize
    layer's shape arithmetic comes out as six more outputs."""
    import openvino  # only this format needs it

    log.info("converting to OpenVINO IR in %s", shown(out))
    traced = tf.function(probabilities_function(model)).get_concrete_function(image_spec(tf.float32))
    with written_to(out):
        ir = openvino.convert_model(traced)
        openvino.save_model(ir, str(partial / OPENVINO_FILE), compress_to_fp16=False)
    log.info("compile it with INFERENCE_PRECISION_HINT %s (benchmark_app: -infer_precision %s): OpenVINO's "
             "default on a CPU with bfloat16 is bf16, less exact", PRECISION_HINT, PRECISION_HINT)
    return out, {"inference_precision_hint": PRECISION_HINT}
