"""The models built from the registry: the frozen backbone, the seed's head, and the classifier around them."""
import os
import re
import warnings
from pathlib import Path

import numpy as np
from filelock import FileLock

from stages.lib.backbones import BACKBONES, Backbone
from stages.lib.frameworks import keras
from stages.lib.params import OFFLINE_RUN
from stages.lib.random_weights import draw_random_weights


def _construct(spec: Backbone, input_shape, weights) -> keras.Model:
    # No custom name=: Keras derives the ImageNet weight file names from the default one.
    constructor = getattr(keras.applications, spec.application)
    if spec.features_layer:
        full = constructor(include_top=True, weights=weights, input_shape=input_shape)
        return keras.Model(full.input, full.get_layer(spec.features_layer).output)
    return constructor(include_top=False, weights=weights, pooling="avg", input_shape=input_shape)


def _imagenet_weights(name: str, spec: Backbone) -> list[np.ndarray]:
    """Keras's own download and cache (~/.keras/models); built at the default size, valid at any.

    Keras downloads straight into its cache, so concurrent experiments take turns behind a lock:
    the first fetches, the others find the finished file.
    """
    where = Path(os.environ["KERAS_HOME"]) / "models"  # set by stages/__init__.py
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(error.errno, f"cannot create the ImageNet weights cache {where} ({error.strerror}); set "
                                   f"KERAS_HOME to a writable folder, or model.weights to a local file") from None
    try:
        with FileLock(where / f".{name}.lock"):
            reference = _construct(spec, None, "imagenet")
    except Exception as error:  # Keras raises a bare Exception for a failed download
        url = re.search(r"https?://\S+?\.h5", str(error))
        fix = f"download {url.group(0)} into {where}/" if url else f"put its weights file into {where}/"
        raise FileNotFoundError(
            f"model.weights: ImageNet weights for {name!r} could not be fetched ({str(error).splitlines()[0]}); "
            f"{fix}, or set model.weights to a local weights file, or run on synthetic data offline: {OFFLINE_RUN}"
        ) from error
    return reference.get_weights()


def build_backbone(name: str, weights: str, size: int, seed: int) -> keras.Model:
    """The frozen backbone: preprocessed (size, size, 3) images in, pooled features out.

    Args:
        weights: "imagenet", "none" (random from `seed`, the same on every backend) or a path to a weights file.
    """
    spec = BACKBONES[name]
    keras.utils.set_random_seed(seed)
    backbone = _construct(spec, (size, size, 3), None)
    if weights == "imagenet":
        backbone.set_weights(_imagenet_weights(name, spec))
    elif weights == "none":
        draw_random_weights(backbone, seed)
    else:
        try:
            with warnings.catch_warnings():
                # Keras 3.15 warns once per graph node of a functional model although every weight loads.
                warnings.filterwarnings("ignore", message="Skipping nested container")
                backbone.load_weights(weights)
        except ValueError as error:
            raise ValueError(
                f"model.weights: {weights!r} does not fit backbone {name!r}: {str(error).splitlines()[0]}"
            ) from error
    backbone.trainable = False
    return backbone


def preprocessing_layer(spec: Backbone) -> keras.layers.Layer:
    """The backbone's preprocessing as a frozen 1x1 convolution: a built-in layer, so saved models load anywhere."""
    affine = spec.preprocessing
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for out_channel, in_channel in enumerate(affine.source):
        kernel[0, 0, in_channel, out_channel] = 1.0 / affine.std[out_channel]
    bias = -np.asarray(affine.mean, np.float32) / np.asarray(affine.std, np.float32)
    return keras.layers.Conv2D(
        3, 1, name="preprocess", trainable=False,
        kernel_initializer=keras.initializers.Constant(kernel),
        bias_initializer=keras.initializers.Constant(bias),
    )


def build_head(feature_width: int, units: int, num_classes: int) -> keras.Sequential:
    """The seed's head: Dense(units, relu) -> Dense(classes, softmax), on pooled features."""
    return keras.Sequential(
        [
            keras.Input((feature_width,), name="features"),
            keras.layers.Dense(units, activation="relu", name="head_dense"),
            keras.layers.Dense(num_classes, activation="softmax", name="predictions"),
        ],
        name="head",
    )


def augmentation() -> keras.Sequential:
    """Random flips and shifts; Keras's random layers are active in fit() only, never at inference."""
    return keras.Sequential(
        [keras.layers.RandomFlip("horizontal"), keras.layers.RandomTranslation(0.125, 0.125, fill_mode="reflect")],
        name="augment",
    )


def image_model(backbone_name: str, backbone: keras.Model, size: int, head=None, input_size=None,
                augment: bool = False) -> keras.Model:
    """RGB images with values 0-255 in, features (or class probabilities with a head) out.

    Images are resized in-graph to `size`, the size the backbone was built and trained at;
    `input_size=None` accepts any size.
    """
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = augmentation()(inputs) if augment else inputs
    x = keras.layers.Resizing(size, size, name="resize")(x)
    x = preprocessing_layer(BACKBONES[backbone_name])(x)
    # training=False keeps BatchNormalization in inference mode even if layers are unfrozen later.
    outputs = backbone(x, training=False)
    if head is not None:
        outputs = head(outputs)
    return keras.Model(inputs, outputs, name=f"{backbone_name}_classifier" if head else f"{backbone_name}_features")


def require_layers(backbone: keras.Model, count: int) -> None:
    """Refuse to fine-tune more layers than the backbone has, before anything is trained."""
    if count > len(backbone.layers):
        raise ValueError(f"train.fine_tune_layers: {count} exceeds the {len(backbone.layers)} layers of the "
                         f"backbone; set it to {len(backbone.layers)} or fewer")


def unfreeze_top(backbone: keras.Model, count: int) -> list[str]:
    """Make the backbone's top `count` layers trainable, except BatchNormalization; returns their names."""
    require_layers(backbone, count)
    layers = backbone.layers
    backbone.trainable = True
    for index, layer in enumerate(layers):
        # BatchNormalization stays frozen: its statistics were learnt on ImageNet, not on a few batches.
        layer.trainable = index >= len(layers) - count and not isinstance(layer, keras.layers.BatchNormalization)
    return [layer.name for layer in layers if layer.trainable and layer.weights]


def require_finite_weights(model: keras.Model, fix: str) -> None:
    """Refuse a model with a NaN or infinite weight, naming the first such one (its path names the
    layer); `fix` says what to do."""
    for weight in model.weights:  # nested models' weights included
        if not np.isfinite(keras.ops.convert_to_numpy(weight)).all():
            raise ValueError(f"train: weight {weight.path!r} holds non-finite values (NaN or infinity); {fix}")
