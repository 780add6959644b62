"""params.yaml, loaded once into frozen dataclasses and validated in one place.

No ML framework is imported here: reading params.yaml is instant, and a stage's declared
dependencies stay the code it runs.
"""
import difflib
import math
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from stages.lib import paths
from stages.lib.backbones import BACKBONES
from stages.lib.params_checks import at_least, in_range, is_dir, is_file, one_of, section, unknown_key
from stages.lib.params_file import ParamsError, read_yaml
from stages.lib.quoting import shown

SOURCES = ("cifar10", "synthetic", "folder")
# The whole pipeline with no network, as the README's first screen gives it and a failed download suggests:
# deterministic synthetic images, random weights, small sizes (at 224x224 the 60,000 synthetic images take 9 GB).
OFFLINE_RUN = ("dvc exp run -S data.source=synthetic -S model.weights=none -S data.image_size=64 "
               "-S data.limit=2000 -S data.val_size=200")
# stages/lib/engines.py runs them, each on Keras with this backend (stages/lib/engine_choice.py picks `auto`)
ENGINE_BACKENDS = {"tensorflow": "tensorflow", "xla": "tensorflow", "openvino": "tensorflow", "jax": "jax"}
ENGINES = ("auto", *ENGINE_BACKENDS)
PRECISIONS = ("float32", "mixed")
HEADS = ("mlp", "linear")  # stages/lib/heads.py fits the linear one
NUM_CLASSES = 10  # CIFAR-10 and the synthetic set; a folder dataset has as many as it has class folders
MIN_FOLDER_CLASSES = 2
TRAIN_SPLIT_SIZE = 50_000  # CIFAR-10's splits; the synthetic set mirrors them
TEST_SPLIT_SIZE = 10_000
# Upper bounds that no useful run comes near, so that a typo fails here rather than as an allocation of
# hundreds of GiB: a batch of 1024 images at 224x224 is already 0.6 GB of float32 before the backbone's
# activations, a head of 8192 units on ResNet-50's 2048 features 16.8M weights, and 60,000 images cached
# at 1024x1024 take 189 GB. Seeds are what NumPy accepts.
MAX_IMAGE_SIZE = 1024
MAX_BATCH_SIZE = 1024
MAX_HEAD_UNITS = 8192
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class DataParams:
    source: str
    archive: str
    path: str
    verify: bool
    image_size: int
    val_size: int
    limit: int | None
    seed: int


@dataclass(frozen=True)
class ModelParams:
    backbone: str
    weights: str
    head_units: int
    seed: int


@dataclass(frozen=True)
class ExtractParams:
    enabled: bool
    batch_size: int
    engine: str
    precision: str


@dataclass(frozen=True)
class TrainParams:
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    fine_tune_layers: int
    fine_tune_epochs: int
    fine_tune_learning_rate: float
    augment: bool
    head: str
    linear_c: tuple[float, ...]


@dataclass(frozen=True)
class Params:
    data: DataParams
    model: ModelParams
    extract: ExtractParams
    train: TrainParams


def _validate(params: Params) -> None:
    data, model, extract, train = params.data, params.model, params.extract, params.train
    one_of("data.source", data.source, SOURCES)
    if model.backbone not in BACKBONES:
        close = difflib.get_close_matches(model.backbone, BACKBONES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParamsError(f"model.backbone: {shown(model.backbone)} is not one of {', '.join(BACKBONES)}{hint}")
    spec = BACKBONES[model.backbone]
    in_range("data.image_size", data.image_size, spec.min_size, MAX_IMAGE_SIZE, f" that {model.backbone} accepts")
    for key, seed in (("data.seed", data.seed), ("model.seed", model.seed), ("train.seed", train.seed)):
        in_range(key, seed, 0, MAX_SEED)
    _validate_split_sizes(data)
    if model.weights not in ("imagenet", "none"):
        _validate_weights_file(model.weights)
    in_range("model.head_units", model.head_units, 1, MAX_HEAD_UNITS)
    in_range("extract.batch_size", extract.batch_size, 1, MAX_BATCH_SIZE)
    one_of("extract.engine", extract.engine, ENGINES)
    one_of("extract.precision", extract.precision, PRECISIONS)
    at_least("train.epochs", train.epochs, 1)
    in_range("train.batch_size", train.batch_size, 1, MAX_BATCH_SIZE)
    at_least("train.fine_tune_layers", train.fine_tune_layers, 0)
    at_least("train.fine_tune_epochs", train.fine_tune_epochs, 0)
    for key in ("learning_rate", "fine_tune_learning_rate"):
        rate = getattr(train, key)
        if not (math.isfinite(rate) and rate > 0):
            raise ParamsError(f"train.{key}: {shown(rate)} must be a positive number")
    _validate_head(extract, train)


def _validate_head(extract: ExtractParams, train: TrainParams) -> None:
    one_of("train.head", train.head, HEADS)
    for index, strength in enumerate(train.linear_c):
        if not (math.isfinite(strength) and strength > 0):
            raise ParamsError(f"train.linear_c[{index}]: {shown(strength)} must be a positive number")
    if train.head == "linear" and not extract.enabled:
        raise ParamsError("train.head: linear fits cached features; set extract.enabled: true, or train.head: mlp")
    if train.fine_tune_layers and not train.fine_tune_epochs:
        raise ParamsError(f"train.fine_tune_epochs: 0 leaves the {train.fine_tune_layers} layers that "
                          f"train.fine_tune_layers unfreezes untrained; set it to 1 or more, or "
                          f"train.fine_tune_layers: 0")
    if train.head == "linear" and train.fine_tune_layers:
        raise ParamsError("train.head: linear is fitted once, on frozen features; set train.fine_tune_layers: 0, "
                          "or train.head: mlp")


def _validate_weights_file(weights: str) -> None:
    """A local weights file lives under weights/, which dvc.yaml declares as a dependency of the stages that read it."""
    if not is_file(weights):
        raise ParamsError(f"model.weights: {shown(weights)} is not imagenet, none, or an existing weights file")
    if not Path(weights).resolve().is_relative_to(paths.WEIGHTS.resolve()):
        raise ParamsError(f"model.weights: {shown(weights)} is outside {paths.WEIGHTS}/; move it there, so that DVC "
                          f"reruns extract and train when the file changes")


def _validate_split_sizes(data: DataParams) -> None:
    """What can be known before reading the data; prepare checks a folder dataset's own counts."""
    if data.source == "folder":
        if not is_dir(data.path):
            raise ParamsError(f"data.path: {shown(data.path)} is not a folder; it must hold train/<class>/<images>")
        classes = MIN_FOLDER_CLASSES
    else:
        classes = NUM_CLASSES
    if data.limit is not None:
        at_least("data.limit", data.limit, 2 * classes, " (two images per class: one to train, one to test)")
    at_least("data.val_size", data.val_size, classes, " (one image per class)")
    if data.source == "folder":
        return
    train_size = min(data.limit or TRAIN_SPLIT_SIZE, TRAIN_SPLIT_SIZE)
    if data.val_size > train_size - NUM_CLASSES:
        raise ParamsError(
            f"data.val_size: {data.val_size} leaves fewer than {NUM_CLASSES} of the {train_size} training images "
            f"to train on; set it below {train_size - NUM_CLASSES}"
        )


def parse_params(raw) -> Params:
    """Turn the parsed YAML mapping into validated Params, or raise ParamsError naming the key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml: expected a mapping of sections, got {shown(raw)}")
    sections = {field.name: typing.get_type_hints(Params)[field.name] for field in fields(Params)}
    for name in raw:
        if name not in sections:
            raise ParamsError(unknown_key(str(name), list(sections)))
    params = Params(**{name: section(name, cls, raw.get(name)) for name, cls in sections.items()})
    _validate(params)
    return params


def load_params(path: Path = Path("params.yaml")) -> Params:
    return parse_params(read_yaml(path))
