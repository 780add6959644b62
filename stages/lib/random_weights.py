"""`model.weights: none`: a random backbone drawn by NumPy, so the same seed gives the same network on every backend.

Keras's initialisers draw with the backend's own generator, so one seed gives TensorFlow and JAX different networks:
features extracted on JAX would not fit the classifier trained on TensorFlow. The distributions stay Keras's.
"""
import math

import numpy as np

from stages.lib.frameworks import keras


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras's fan-in and fan-out: a kernel's (..., inputs, outputs), times its receptive field."""
    if len(shape) < 2:
        return (shape[0],) * 2 if shape else (1, 1)
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def variance_scaling(initializer, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A draw from a Keras VarianceScaling initialiser's distribution (Glorot, He and LeCun are ones)."""
    fan_in, fan_out = fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[initializer.mode]
    variance = initializer.scale / max(1.0, fan)
    if initializer.distribution == "uniform":
        limit = math.sqrt(3 * variance)
        return rng.uniform(-limit, limit, shape)
    if initializer.distribution == "untruncated_normal":
        return rng.normal(0, math.sqrt(variance), shape)
    return truncated_normal(math.sqrt(variance) / 0.87962566103423978, shape, rng)  # Keras's correction


def truncated_normal(stddev: float, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Normal values beyond two deviations drawn again, as Keras's truncated normal does."""
    values = rng.normal(0, stddev, shape)
    outside = np.abs(values) > 2 * stddev
    while outside.any():
        values[outside] = rng.normal(0, stddev, int(outside.sum()))
        outside = np.abs(values) > 2 * stddev
    return values


def layers_of(model: keras.Model):
    """The layers that hold the weights, inside nested models too (ConvNeXt's stem is one)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from layers_of(layer)
        else:
            yield layer


def draw_random_weights(backbone: keras.Model, seed: int) -> None:
    """Each randomly initialised variable drawn again from `seed`; constant ones (zeros, ones) are the same anywhere."""
    drawn = 0
    for layer in layers_of(backbone):
        for variable in layer.weights:
            name = variable.path.rsplit("/", 1)[-1]
            initializer = getattr(layer, f"{name}_initializer", None)
            if isinstance(layer, keras.layers.DepthwiseConv2D) and name == "kernel":
                initializer = layer.depthwise_initializer
            if isinstance(initializer, keras.initializers.VarianceScaling):
                rng = np.random.default_rng([seed, drawn])
                variable.assign(variance_scaling(initializer, tuple(variable.shape), rng).astype(variable.dtype))
                drawn += 1
            elif np.ptp(keras.ops.convert_to_numpy(variable)) != 0:
                raise ValueError(f"model.weights: none cannot draw {variable.path} ({type(initializer).__name__}) "
                                 f"the same on every backend; use model.weights: imagenet or a weights file")
