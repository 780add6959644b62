"""Random edits to params.yaml: every invalid one is rejected naming its key, every valid one accepted."""
import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from stages.lib.backbones import BACKBONES
from stages.lib.params import (ENGINES, MAX_BATCH_SIZE, MAX_HEAD_UNITS, MAX_IMAGE_SIZE, MAX_SEED, PRECISIONS, SOURCES,
                           ParamsError, parse_params)
from tests.helpers import TINY, merged, repo_params

BASE = merged(repo_params(), TINY)  # limit 400, val_size 100, image_size 32
integers, text = st.integers, st.text(max_size=12)
not_bool = st.one_of(integers(), text, st.floats(allow_nan=False), st.none())
not_int = st.one_of(text, st.floats(allow_nan=False).filter(lambda x: not float(x).is_integer()), st.booleans())

VALID = {
    "data.source": st.sampled_from(["cifar10", "synthetic"]),
    "data.archive": text,
    "data.path": text,
    "data.verify": st.booleans(),
    "data.image_size": integers(32, MAX_IMAGE_SIZE),
    "data.val_size": integers(10, 390),
    "data.limit": st.one_of(st.none(), integers(110, 10**6)),
    "data.seed": integers(0, MAX_SEED),
    "model.backbone": st.sampled_from(sorted(BACKBONES)),
    "model.weights": st.sampled_from(["imagenet", "none"]),
    "model.head_units": integers(1, MAX_HEAD_UNITS),
    "model.seed": integers(0, MAX_SEED),
    "extract.enabled": st.booleans(),
    "extract.batch_size": integers(1, MAX_BATCH_SIZE),
    "extract.engine": st.sampled_from(ENGINES),
    "extract.precision": st.just("float32"),  # "mixed" also depends on the machine
    "train.epochs": integers(1, 1000),
    "train.batch_size": integers(1, MAX_BATCH_SIZE),
    "train.learning_rate": st.floats(1e-9, 10),
    "train.seed": integers(0, MAX_SEED),
    "train.fine_tune_layers": integers(0, 1000),
    "train.fine_tune_epochs": integers(0, 1000),
    "train.fine_tune_learning_rate": st.floats(1e-12, 1),
    "train.augment": st.booleans(),
    "train.head": st.just("mlp"),  # "linear" depends on extract.enabled and fine_tune_layers: test_params_errors.py
    "train.linear_c": st.lists(st.floats(1e-6, 1e6), min_size=1, max_size=6),
}

INVALID = {
    "data.source": st.one_of(text.filter(lambda s: s not in SOURCES), integers()),
    "data.path": st.one_of(integers(), st.booleans(), st.none()),
    "data.archive": st.one_of(integers(), st.booleans(), st.none()),
    "data.verify": not_bool,
    "data.image_size": st.one_of(integers(max_value=31), integers(MAX_IMAGE_SIZE + 1), not_int),
    "data.val_size": st.one_of(integers(max_value=9), integers(391, 10**6), not_int),
    "data.limit": st.one_of(integers(max_value=19), not_int),
    "data.seed": st.one_of(integers(max_value=-1), integers(MAX_SEED + 1), not_int),
    "model.backbone": st.one_of(text.filter(lambda s: s not in BACKBONES), integers()),
    "model.weights": text.filter(lambda s: s not in ("imagenet", "none")).map(lambda s: f"no/such/{s}.weights.h5"),
    "model.head_units": st.one_of(integers(max_value=0), integers(MAX_HEAD_UNITS + 1), not_int),
    "model.seed": st.one_of(integers(max_value=-1), integers(MAX_SEED + 1), not_int),
    "extract.enabled": not_bool,
    "extract.batch_size": st.one_of(integers(max_value=0), integers(MAX_BATCH_SIZE + 1), not_int),
    "extract.engine": st.one_of(text.filter(lambda s: s not in ENGINES), integers()),
    "extract.precision": st.one_of(text.filter(lambda s: s not in PRECISIONS), integers()),
    "train.epochs": st.one_of(integers(max_value=0), not_int),
    "train.batch_size": st.one_of(integers(max_value=0), integers(MAX_BATCH_SIZE + 1), not_int),
    "train.learning_rate": st.one_of(st.floats(max_value=0), st.just(math.inf), st.just(math.nan),
                                     text, st.booleans()),  # a number in quotes is a string, too
    "train.seed": st.one_of(integers(max_value=-1), integers(MAX_SEED + 1), not_int),
    "train.fine_tune_layers": st.one_of(integers(max_value=-1), not_int),
    "train.fine_tune_epochs": st.one_of(integers(max_value=-1), not_int),
    "train.fine_tune_learning_rate": st.one_of(st.floats(max_value=0), st.just(math.inf), st.booleans(), text),
    "train.augment": not_bool,
    "train.head": st.one_of(text.filter(lambda s: s not in ("mlp", "linear")), integers()),
    "train.linear_c": st.one_of(st.just([]), st.floats(), text, st.lists(st.floats(max_value=0), min_size=1),
                                st.lists(text, min_size=1)),
}


def edited(edits: dict) -> dict:
    raw = merged(BASE, {})
    for key, value in edits.items():
        section, name = key.split(".")
        raw[section][name] = value
    return raw


def test_the_strategies_cover_every_key():
    every_key = {f"{section}.{name}" for section, values in BASE.items() for name in values}
    assert set(VALID) == set(INVALID) == every_key


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(VALID)), st.none(), max_size=5).flatmap(
    lambda keys: st.fixed_dictionaries({key: VALID[key] for key in keys})))
def test_valid_edits_are_accepted(edits):
    if "data.limit" in edits or "data.val_size" in edits:  # the two bound each other
        limit = edits.get("data.limit", BASE["data"]["limit"]) or 50_000
        edits["data.val_size"] = min(edits.get("data.val_size", BASE["data"]["val_size"]), limit - 10)
    if edits.get("train.fine_tune_layers") and "train.fine_tune_epochs" in edits:  # unfrozen layers must train
        edits["train.fine_tune_epochs"] = max(1, edits["train.fine_tune_epochs"])
    params = parse_params(edited(edits))
    for key, value in edits.items():
        section, name = key.split(".")
        assert getattr(getattr(params, section), name) == (tuple(value) if isinstance(value, list) else value)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(INVALID)).flatmap(lambda key: st.tuples(st.just(key), INVALID[key])))
def test_invalid_edits_are_rejected_naming_the_key(edit):
    key, value = edit
    try:
        parse_params(edited({key: value}))
    except ParamsError as error:
        assert re.match(rf"{re.escape(key)}(\[\d+\])?: ", str(error)), (key, value, str(error))  # items by index
        assert "\n" not in str(error)
    else:
        raise AssertionError(f"{key}: {value!r} was accepted")


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(BASE)), st.text(min_size=1, max_size=12))
def test_unknown_keys_are_rejected_naming_the_key(section, key):
    raw = merged(BASE, {})
    if key in raw[section]:
        return
    raw[section][key] = 1
    try:
        parse_params(raw)
    except ParamsError as error:
        assert str(error).startswith(f"{section}.{key}: unknown key")
    else:
        raise AssertionError(f"{section}.{key} was accepted")
