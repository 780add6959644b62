"""The backbone registry: every entry builds, preprocesses as Keras does, and loads weights files."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from stages.lib.backbones import BACKBONES, IN_MODEL
from stages.lib.models import build_backbone, image_model, preprocessing_layer
from stages.lib.params import OFFLINE_RUN

KERAS_PREPROCESS = {
    "densenet121": keras.applications.densenet.preprocess_input,
    "vgg16": keras.applications.vgg16.preprocess_input,
    "resnet50": keras.applications.resnet50.preprocess_input,
    "mobilenet_v2": keras.applications.mobilenet_v2.preprocess_input,
    "convnext_tiny": keras.applications.convnext.preprocess_input,
    "convnext_small": keras.applications.convnext.preprocess_input,
    "efficientnetv2_b0": keras.applications.efficientnet_v2.preprocess_input,
}


def test_every_backbone_has_a_reference_preprocessing():
    assert set(KERAS_PREPROCESS) == set(BACKBONES)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_builds_at_its_minimum_size_with_the_documented_width(name):
    spec = BACKBONES[name]
    backbone = build_backbone(name, "none", spec.min_size, seed=0)
    images = np.random.default_rng(0).uniform(-1, 1, size=(2, spec.min_size, spec.min_size, 3)).astype(np.float32)
    features = keras.ops.convert_to_numpy(backbone(images, training=False))
    assert features.shape == (2, spec.feature_width)
    assert np.all(np.isfinite(features))
    assert not backbone.trainable


@pytest.mark.parametrize("name", ["densenet121", "efficientnetv2_b0"])  # Glorot uniform; He-like truncated normal
def test_random_weights_keep_keras_initialisers_distributions(name):
    """`weights: none` draws with NumPy (the same on every backend), each variable as Keras's initialiser would."""
    spec = BACKBONES[name]
    ours = build_backbone(name, "none", 32, seed=0)
    keras_drawn = getattr(keras.applications, spec.application)(include_top=False, weights=None, input_shape=(32, 32, 3))
    assert len(ours.weights) == len(keras_drawn.weights)
    for drawn, reference in zip(ours.weights, keras_drawn.weights):
        drawn, reference = keras.ops.convert_to_numpy(drawn), keras.ops.convert_to_numpy(reference)
        if np.ptp(reference) == 0:
            np.testing.assert_array_equal(drawn, reference)
        else:
            assert not np.array_equal(drawn, reference)
            assert 0.8 < drawn.std() / reference.std() < 1.25 and np.abs(drawn).max() <= 1.01 * np.abs(reference).max()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_preprocessing_matches_keras(name):
    images = np.random.default_rng(1).integers(0, 256, size=(2, 8, 8, 3)).astype(np.float32)
    ours = keras.ops.convert_to_numpy(preprocessing_layer(BACKBONES[name])(images))
    np.testing.assert_allclose(ours, KERAS_PREPROCESS[name](images.copy()), rtol=1e-5, atol=1e-4)


def first_learned_layer_input(backbone: keras.Model) -> keras.Model:
    """What the backbone's first learned layer (its stem) reads, from what the backbone is given."""
    stem = next(layer for layer in backbone.layers
                if layer.weights and not isinstance(layer, keras.layers.Normalization))
    return keras.Model(backbone.input, stem.input)


@pytest.mark.parametrize("name", sorted(name for name, spec in BACKBONES.items() if spec.preprocessing == IN_MODEL))
def test_backbones_marked_in_model_normalise_raw_pixels_themselves(name):
    # Given 0-255 pixels, these models must scale them to ImageNet's normalised range on their own
    # (our preprocessing passes them through): black lands near -2, white near +2.
    backbone = build_backbone(name, "none", 32, seed=0)
    pixels = np.stack([np.zeros((32, 32, 3)), np.full((32, 32, 3), 255.0)]).astype(np.float32)
    seen = keras.ops.convert_to_numpy(first_learned_layer_input(backbone)(pixels))
    black, white = seen[0], seen[1]
    assert np.abs(seen).max() < 3, (black.min(), white.max())
    assert black.max() < -0.9 and white.min() > 0.9, (black.max(), white.min())


def test_weights_from_a_file_are_loaded(tmp_path):
    saved = build_backbone("densenet121", "none", 32, seed=1)
    last_normalisation = saved.get_layer("bn")  # its scale, 1 when initialised, marks the file's weights
    gamma, *statistics = last_normalisation.get_weights()
    last_normalisation.set_weights([np.full_like(gamma, 3.0), *statistics])
    path = tmp_path / "densenet121.weights.h5"
    saved.save_weights(path)
    loaded = build_backbone("densenet121", str(path), 32, seed=2)
    np.testing.assert_array_equal(loaded.get_layer("bn").get_weights()[0], 3.0)
    images = np.random.default_rng(2).uniform(-2, 2, size=(3, 32, 32, 3)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(saved(images, training=False))
    computed = keras.ops.convert_to_numpy(loaded(images, training=False))
    np.testing.assert_allclose(computed, expected, rtol=1e-5, atol=1e-6)


def test_a_weights_file_for_another_backbone_is_a_clear_error(tmp_path):
    path = tmp_path / "vgg16.weights.h5"
    build_backbone("vgg16", "none", 32, seed=0).save_weights(path)
    with pytest.raises(ValueError, match=r"model.weights: '.*vgg16.weights.h5' does not fit backbone 'densenet121'"):
        build_backbone("densenet121", str(path), 32, seed=0)


# An empty Keras cache and a download that fails, whatever the machine has cached or can reach.
OFFLINE_IMAGENET = """
import urllib.error, urllib.request
def no_network(url, *args, **kwargs):
    raise urllib.error.URLError("no network")
urllib.request.urlretrieve = no_network
from stages.lib.models import build_backbone
try:
    build_backbone("vgg16", "imagenet", 32, seed=0)
except FileNotFoundError as error:
    print(error)
"""


def test_missing_imagenet_weights_name_the_file_and_where_to_put_it(tmp_path):
    from tests.helpers import REPO

    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", OFFLINE_IMAGENET], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    message = result.stdout
    assert "model.weights: ImageNet weights for 'vgg16' could not be fetched" in message
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert f"{tmp_path / 'keras' / 'models'}/" in message
    assert message.strip().endswith(f"run on synthetic data offline: {OFFLINE_RUN}")


def test_the_image_model_takes_raw_images_of_any_size():
    backbone = build_backbone("vgg16", "none", 32, seed=0)
    model = image_model("vgg16", backbone, 32)
    for shape in [(1, 32, 32, 3), (2, 48, 40, 3)]:
        assert model(np.zeros(shape, np.uint8)).shape == (shape[0], 512)
