"""The trained classifier as a set of files that change together: the model (.keras, and the seed's .h5),
its class names, and train's record of them, which holds every file's hash and is written last.

A run interrupted between two renames leaves files of two runs side by side; the hashes say so, and
evaluate and predict refuse such a set instead of pairing a new model with old class names.
"""
import logging
import re
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stages.lib import paths
from stages.lib.atomic import atomic_files, json_text, read_json, require_room, sha256_of
from stages.lib.frameworks import keras
from stages.lib.keras_zip import save_keras
from stages.lib.model_bounds import too_large, variables_within, weights_budget
from stages.lib.quoting import shown


@contextmanager
def legacy_format_warning_hidden():
    """Keras warns at every .h5 save that the format is legacy: the seed's users ask for that file."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(level)


def save_classifier(model: keras.Model, classes: list[str], record: dict) -> None:
    """Every file of the set written aside, then all renamed into place, the record with their hashes last:
    a failure while writing (a full disk) leaves the previous set whole."""
    keras_file, h5_file = paths.INFERENCE_MODEL, paths.LEGACY_MODEL
    with atomic_files(keras_file, h5_file, paths.CLASSES, paths.MODEL_RECORD) as partial:
        save_keras(model, partial[keras_file])
        require_room(h5_file, partial[keras_file].stat().st_size + 2**20)  # the same weights, in HDF5
        with legacy_format_warning_hidden():
            model.save(partial[h5_file])
        partial[paths.CLASSES].write_text(json_text(classes))
        files = {path.name: sha256_of(partial[path]) for path in (keras_file, h5_file, paths.CLASSES)}
        partial[paths.MODEL_RECORD].write_text(json_text({**record, "files": files}))


# What train writes into its record, by type: a record is a file, and a hand edit must not become a traceback.
RECORD_TYPES = {"head_layer": str, "matches_cached_features": bool, "files": dict}


def record_problem(record) -> str | None:
    """What makes `record` other than the one train writes, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    wrong = [key for key, kind in RECORD_TYPES.items() if key in record and not isinstance(record[key], kind)]
    files = record.get("files", {})
    if "files" not in wrong and not all(isinstance(item, str) for item in (*files, *files.values())):
        wrong.append("files")
    return f"wrong {', '.join(wrong)}" if wrong else None


def read_record(model_path: Path) -> dict:
    """train's record beside a model, after checking that every file it lists that is there is the one it
    wrote; {} for a model saved elsewhere, without one."""
    record_path = paths.record_beside(model_path)
    if not record_path.is_file():
        return {}
    try:
        record = read_json(record_path)
    except ValueError as error:
        raise ValueError(f"{shown(record_path)} is not JSON ({shown(error)}); run `dvc repro train`") from None
    if problem := record_problem(record):
        raise ValueError(f"{shown(record_path)} is not train's record of a model set ({problem}); "
                         f"run `dvc repro train`")
    for name, expected in record.get("files", {}).items():
        path = record_path.with_name(name)
        if path.is_file() and sha256_of(path) != expected:
            raise ValueError(f"{shown(path)} is not the file {shown(record_path)} records: "
                             f"the set comes from two train runs (one was interrupted); run `dvc repro train`")
    return record


def load_model(path: Path) -> keras.Model:
    """keras.models.load_model in safe mode; a file it cannot read or refuses is one ValueError."""
    name = shown(path)
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ValueError(f"{name} is not a .keras file (a zip archive); it is damaged or truncated, save it again")
    try:
        with variables_within(weights_budget(path), path):
            model = keras.models.load_model(path, safe_mode=True)
    except Exception as error:  # Keras raises TypeError, ValueError or OSError, depending on what is wrong
        if bound := too_large(error):
            raise bound from None
        if path.suffix == ".h5":  # Keras 3.15 cannot rebuild ConvNeXt from one, LayerScale given or not
            raise ValueError(f"{name} could not be loaded ({_reason(error)}): Keras cannot rebuild every model "
                             f"from the legacy .h5 format, ConvNeXt's among them; use the .keras file saved "
                             f"beside it") from error
        raise ValueError(f"{name} was refused: not a plain Keras model of this pipeline ({_reason(error)})"
                         ) from error
    # Keras on JAX compiles predict_on_batch with XLA only for a model compiled with jit_compile; a loaded one ran
    # op by op, hundreds of small compilations (benchmarks/README.md#figures-behind-choices-in-the-code).
    model.jit_compile = keras.backend.backend() == "jax"
    return model


def _reason(error: Exception) -> str:
    """What Keras found, in a few words: the name it would not load, when there is one."""
    text = str(error)
    unknown = re.search(r"Could not locate (class|function) '([^']{1,100})'", text)
    if unknown:
        return f"it names {unknown.group(2)!r}, which is not a Keras {unknown.group(1)}"
    unknown_layer = re.search(r"Unknown layer: '([^']{1,100})'", text)
    if unknown_layer:
        return f"Keras's loader does not know its layer {unknown_layer.group(1)!r}"
    return shown(error)


def _class_names(path: Path) -> list[str]:
    try:
        classes = read_json(path)
    except ValueError as error:
        raise ValueError(f"{shown(path)} is not JSON ({error})") from None
    if not (isinstance(classes, list) and classes and all(isinstance(name, str) for name in classes)):
        raise ValueError(f"{shown(path)} must hold a JSON list of class names")
    return classes


def load_classifier(model_path: Path) -> tuple[keras.Model, list[str], dict]:
    """A saved classifier, its class names and train's record of it, checked against one another."""
    if not model_path.is_file():
        raise FileNotFoundError(f"no model at {shown(model_path)}; run `dvc repro` first, "
                                f"or pass --model PATH")
    classes_path = paths.classes_beside(model_path)
    if not classes_path.is_file():
        raise FileNotFoundError(f"no class names at {shown(classes_path)}; they are saved beside the "
                                f"model by the train stage")
    record = read_record(model_path)
    classes = _class_names(classes_path)
    model = load_model(model_path)
    outputs = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    if outputs != len(classes):
        raise ValueError(f"{shown(classes_path)} names {len(classes)} classes but "
                         f"{shown(model_path)} has {outputs} outputs; keep the class names saved with "
                         f"the model beside it")
    return model, classes, record


def predict_padded(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's outputs for up to batch_size images, always run as a batch of batch_size: Keras traces
    the model again for each new batch shape, and a short last batch would cost as long as the first."""
    count = len(images)
    if count < batch_size:
        images = np.concatenate([images, np.zeros((batch_size - count, *images.shape[1:]), images.dtype)])
    return keras.ops.convert_to_numpy(model.predict_on_batch(images))[:count]
