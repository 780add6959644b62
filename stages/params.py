"""params.yaml, loaded once into frozen dataclasses and validated in one place.

No ML framework is imported here: reading params.yaml is instant, and a stage's declared
dependencies stay the code it runs.
"""
import difflib
import math
import re
import reprlib
import typing
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from stages import paths
from stages.backbones import BACKBONES

SOURCES = ("cifar10", "synthetic", "folder")
ENGINES = ("auto", "tensorflow", "xla", "openvino")  # stages/engines.py runs them
PRECISIONS = ("float32", "mixed")
HEADS = ("mlp", "linear")  # stages/heads.py fits the linear one
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


class ParamsError(ValueError):
    """A value in params.yaml that cannot work; the message names the key."""


def shown(value) -> str:
    """A value as an error message quotes it: repr, cut to about 80 characters, however large the value."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = 80
    short.maxlist = short.maxtuple = short.maxdict = 4
    short.maxlevel = 2
    return short.repr(value)


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


def _unknown_key(key: str, known: list[str]) -> str:
    key = key if len(key) <= 80 else key[:77] + "..."
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{key}: unknown key{hint}; known keys are {', '.join(known)}"


def _check_type(key: str, value, expected) -> object:
    if typing.get_origin(expected) is tuple:  # a non-empty list of one type, kept as a tuple
        if not isinstance(value, list) or not value:
            raise ParamsError(f"{key}: {shown(value)} is not a non-empty list")
        item_type = typing.get_args(expected)[0]
        return tuple(_check_type(f"{key}[{index}]", item, item_type) for index, item in enumerate(value))
    allowed = typing.get_args(expected) or (expected,)
    if value is None and type(None) in allowed:
        return value
    if isinstance(value, bool) != (bool in allowed):
        raise ParamsError(f"{key}: {shown(value)} is not {_type_names(allowed)}")
    if float in allowed and isinstance(value, int):
        return float(value)
    if not isinstance(value, tuple(t for t in allowed if t is not type(None))):
        raise ParamsError(f"{key}: {shown(value)} is not {_type_names(allowed)}")
    return value


def _type_names(allowed) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return " or ".join(names[t] for t in allowed)


def _section(name: str, cls, raw) -> object:
    if raw is None:
        raise ParamsError(f"{name}: missing section; add it to params.yaml")
    if not isinstance(raw, dict):
        raise ParamsError(f"{name}: expected a mapping of keys, got {shown(raw)}")
    hints = typing.get_type_hints(cls)
    known = [field.name for field in fields(cls)]
    for key in raw:
        if key not in known:
            raise ParamsError(_unknown_key(f"{name}.{key}", known))
    missing = [key for key in known if key not in raw]
    if missing:
        raise ParamsError(f"{name}.{missing[0]}: missing; add it to params.yaml")
    return cls(**{key: _check_type(f"{name}.{key}", raw[key], hints[key]) for key in known})


def _at_least(key: str, value, minimum, why: str = "") -> None:
    if value < minimum:
        raise ParamsError(f"{key}: {shown(value)} is below the minimum {minimum}{why}")


def _within(key: str, value, minimum, maximum, why: str = "") -> None:
    _at_least(key, value, minimum, why)
    if value > maximum:
        raise ParamsError(f"{key}: {shown(value)} is above the maximum {maximum}")


def _one_of(key: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ParamsError(f"{key}: {shown(value)} is not one of {', '.join(allowed)}")


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (ValueError, OSError):  # a NUL byte, or a name too long for the file system
        return False


def _is_dir(path: str) -> bool:
    try:
        return Path(path).is_dir()
    except (ValueError, OSError):
        return False


def _validate(params: Params) -> None:
    data, model, extract, train = params.data, params.model, params.extract, params.train
    _one_of("data.source", data.source, SOURCES)
    if model.backbone not in BACKBONES:
        close = difflib.get_close_matches(model.backbone, BACKBONES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParamsError(f"model.backbone: {shown(model.backbone)} is not one of {', '.join(BACKBONES)}{hint}")
    spec = BACKBONES[model.backbone]
    _within("data.image_size", data.image_size, spec.min_size, MAX_IMAGE_SIZE, f" that {model.backbone} accepts")
    for key, seed in (("data.seed", data.seed), ("model.seed", model.seed), ("train.seed", train.seed)):
        _within(key, seed, 0, MAX_SEED)
    _validate_split_sizes(data)
    if model.weights not in ("imagenet", "none"):
        _validate_weights_file(model.weights)
    _within("model.head_units", model.head_units, 1, MAX_HEAD_UNITS)
    _within("extract.batch_size", extract.batch_size, 1, MAX_BATCH_SIZE)
    _one_of("extract.engine", extract.engine, ENGINES)
    _one_of("extract.precision", extract.precision, PRECISIONS)
    _at_least("train.epochs", train.epochs, 1)
    _within("train.batch_size", train.batch_size, 1, MAX_BATCH_SIZE)
    _at_least("train.fine_tune_layers", train.fine_tune_layers, 0)
    _at_least("train.fine_tune_epochs", train.fine_tune_epochs, 0)
    for key in ("learning_rate", "fine_tune_learning_rate"):
        rate = getattr(train, key)
        if not (math.isfinite(rate) and rate > 0):
            raise ParamsError(f"train.{key}: {shown(rate)} must be a positive number")
    _validate_head(extract, train)


def _validate_head(extract: ExtractParams, train: TrainParams) -> None:
    _one_of("train.head", train.head, HEADS)
    for index, strength in enumerate(train.linear_c):
        if not (math.isfinite(strength) and strength > 0):
            raise ParamsError(f"train.linear_c[{index}]: {shown(strength)} must be a positive number")
    if train.head == "linear" and not extract.enabled:
        raise ParamsError("train.head: linear fits cached features; set extract.enabled: true, or train.head: mlp")
    if train.head == "linear" and train.fine_tune_layers:
        raise ParamsError("train.head: linear is fitted once, on frozen features; set train.fine_tune_layers: 0, "
                          "or train.head: mlp")


def _validate_weights_file(weights: str) -> None:
    """A local weights file lives under weights/, which dvc.yaml declares as a dependency of the stages that read it."""
    if not _is_file(weights):
        raise ParamsError(f"model.weights: {shown(weights)} is not imagenet, none, or an existing weights file")
    if not Path(weights).resolve().is_relative_to(paths.WEIGHTS.resolve()):
        raise ParamsError(f"model.weights: {shown(weights)} is outside {paths.WEIGHTS}/; move it there, so that DVC "
                          f"reruns extract and train when the file changes")


def _validate_split_sizes(data: DataParams) -> None:
    """What can be known before reading the data; prepare checks a folder dataset's own counts."""
    if data.source == "folder":
        if not _is_dir(data.path):
            raise ParamsError(f"data.path: {shown(data.path)} is not a folder; it must hold train/<class>/<images>")
        classes = MIN_FOLDER_CLASSES
    else:
        classes = NUM_CLASSES
    if data.limit is not None:
        _at_least("data.limit", data.limit, 2 * classes, " (two images per class: one to train, one to test)")
    _at_least("data.val_size", data.val_size, classes, " (one image per class)")
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
            raise ParamsError(_unknown_key(str(name), list(sections)))
    params = Params(**{name: _section(name, cls, raw.get(name)) for name, cls in sections.items()})
    _validate(params)
    return params


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with DVC's reading of numbers (YAML 1.2: 1e-3 is a number, as `dvc exp run -S`
    writes it) and no aliases: nine lines of nested aliases expand to a billion values."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            alias = self.peek_event()
            raise ParamsError(f"line {alias.start_mark.line + 1}: YAML aliases (*{shown(alias.anchor)[1:-1]}) are "
                              f"not supported in params.yaml; write the value out")
        return super().compose_node(parent, index)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$"), list("-+.0123456789"))


def _refuse_duplicate_keys(node: yaml.Node, path: Path, key: str = "") -> None:
    """DVC refuses a params.yaml that gives a key twice; the stages must not quietly take the last."""
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = f"{key}.{key_node.value}" if key else str(key_node.value)
            if name in lines:
                raise ParamsError(f"{shown(name)[1:-1]}: given twice in {path} (lines {lines[name]} and "
                                  f"{key_node.start_mark.line + 1}); keep one")
            lines[name] = key_node.start_mark.line + 1
            _refuse_duplicate_keys(value_node, path, name)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, path, key)


def read_yaml(path: Path):
    """params.yaml as plain data, or ParamsError naming the file."""
    loader = _Loader(Path(path).read_text())
    try:
        try:
            node = loader.get_single_node()
        except ParamsError as error:
            raise ParamsError(f"{path}: {error}") from None
        if node is None:
            return None
        _refuse_duplicate_keys(node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from error
    finally:
        loader.dispose()


def load_params(path: Path = Path("params.yaml")) -> Params:
    return parse_params(read_yaml(path))
