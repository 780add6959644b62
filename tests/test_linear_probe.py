"""train.head: linear, a linear probe on the cached features, saved as the same kind of Keras classifier."""
import json

import keras
import numpy as np
import pytest

from stages import train

from stages.lib import paths
from stages.lib.cache import load_features
from stages.lib.classifier import load_classifier
from stages.lib.heads import fit_linear_probe, linear_head
from stages.lib.params import ParamsError, parse_params
from tests.helpers import ABOVE_CHANCE, TINY, merged, repo_params, run_stages, saved_weights, write_params

GRID = [0.01, 0.1, 1.0, 10.0]
# float32 Keras layers against scikit-learn's float64 arithmetic, on probabilities in [0, 1]
PROBABILITY_TOLERANCE = 1e-5


@pytest.mark.slow  # a DenseNet-121 classifier saved, then loaded
def test_the_saved_linear_classifier_gives_scikit_learns_probabilities(extracted):
    write_params(extracted, {"train": {"head": "linear", "linear_c": GRID}})
    run_stages(train)
    labels = {split: np.load(paths.labels(split)).argmax(1) for split in ("train", "val")}
    probe = fit_linear_probe(load_features("train"), labels["train"], load_features("val"), labels["val"], tuple(GRID))
    test_features = load_features("test")
    expected = probe.model.predict_proba(probe.scaler.transform(test_features))
    model, _, record = load_classifier(paths.INFERENCE_MODEL)
    head = model.get_layer(record["head_layer"])
    np.testing.assert_allclose(head.predict(test_features, verbose=0), expected, atol=PROBABILITY_TOLERANCE, rtol=0)
    # The seed's .h5 holds the same head (that it loads as the same model: tests/test_stages_in_process.py).
    legacy = saved_weights(extracted, record["head_layer"])
    assert [name.removeprefix(f"{head.name}/") for name in legacy] == [weight.path for weight in head.weights]
    for saved, weight in zip(legacy.values(), head.weights):
        np.testing.assert_array_equal(saved, weight.numpy())

    summary = json.loads((paths.TRAIN_LOG / "metrics.json").read_text())
    assert summary["linear_c"] == probe.model.C and probe.model.C in GRID
    chosen = probe.curves[probe.model.C]
    assert summary["validation"]["accuracy"] == chosen["validation/accuracy"] == max(
        curves["validation/accuracy"] for curves in probe.curves.values())
    assert summary["train"]["loss"] == chosen["train/loss"]
    for name in ("train/loss", "train/accuracy", "validation/loss", "validation/accuracy"):
        curve = (paths.TRAIN_CURVES / f"{name}.tsv").read_text().splitlines()
        assert len(curve) == 1 + len(GRID), name  # a header and one row per C, as the MLP has one per epoch
        assert [float(row.split("\t")[-1]) for row in curve[1:]] == pytest.approx(
            [probe.curves[c][name] for c in GRID]), name
    # What evaluate would report: it reads any head the same way, through the record's head_layer.
    accuracy = (expected.argmax(1) == np.load(paths.labels("test")).argmax(1)).mean()
    assert accuracy > ABOVE_CHANCE, accuracy


def test_two_classes_give_scikit_learns_probabilities_too():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    features = rng.normal(size=(200, 8)) + labels[:, None] * 0.8
    probe = fit_linear_probe(features[:150], labels[:150], features[150:], labels[150:], (0.1, 1.0))
    head = linear_head(probe, 2)
    expected = probe.model.predict_proba(probe.scaler.transform(features))
    np.testing.assert_allclose(head.predict(features, verbose=0), expected, atol=PROBABILITY_TOLERANCE, rtol=0)


@pytest.mark.parametrize("scale", [1e-13, 1e6])
def test_features_of_any_size_give_scikit_learns_probabilities(scale):
    # A random MobileNetV2's features are about 1e-13 in size; Keras's Normalization divides by at least 1e-7.
    rng = np.random.default_rng(2)
    labels = np.arange(300) % 3
    features = ((rng.normal(size=(300, 6)) + labels[:, None] * 0.7) * scale).astype(np.float32)
    probe = fit_linear_probe(features[:200], labels[:200], features[200:], labels[200:], (1.0,))
    expected = probe.model.predict_proba(probe.scaler.transform(features))
    computed = linear_head(probe, 3).predict(features, verbose=0)
    np.testing.assert_allclose(computed, expected, atol=PROBABILITY_TOLERANCE, rtol=0)


@pytest.mark.parametrize("changes, message", [
    ({"extract": {"enabled": False}}, "train.head: linear fits cached features; set extract.enabled: true"),
    ({"train": {"fine_tune_layers": 5}}, "train.head: linear is fitted once, on frozen features"),
    ({"train": {"linear_c": [1, 0]}}, "train.linear_c[1]: 0.0 must be a positive number"),
    ({"train": {"linear_c": []}}, "train.linear_c: [] is not a non-empty list"),
])
def test_a_linear_head_that_cannot_work_is_a_params_error(changes, message):
    raw = merged(merged(repo_params(), TINY), {"train": {"head": "linear"}})
    with pytest.raises(ParamsError) as error:
        parse_params(merged(raw, changes))
    assert str(error.value).startswith(message)


def test_the_linear_head_is_plain_keras_layers():
    rng = np.random.default_rng(1)
    labels = np.arange(60) % 3
    features = rng.normal(size=(60, 5)) + labels[:, None]
    head = linear_head(fit_linear_probe(features, labels, features, labels, (1.0,)), 3)
    assert [type(layer) for layer in head.layers] == [keras.layers.Normalization, keras.layers.Dense]
