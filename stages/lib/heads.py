"""The linear-probe head (train.head: linear): multinomial logistic regression on standardised cached
features, its L2 strength chosen on the validation split, as a Keras head the classifier holds.

The standard way to compare frozen features (Kornblith et al., "Do Better ImageNet Models Transfer
Better?", CVPR 2019): a convex problem fitted to convergence, so the same features always give the
same head, and a difference between two backbones is the backbones', not the optimiser's luck.
"""
import copy
import logging
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import StandardScaler

from stages.lib.frameworks import keras

log = logging.getLogger("heads")

MAX_ITERATIONS = 2000  # L-BFGS steps; a fit that needs more is reported, not hidden


@dataclass(frozen=True)
class LinearProbe:
    scaler: StandardScaler  # statistics of the training split only
    model: LogisticRegression  # the fit with the best validation accuracy
    # Per inverse L2 strength C tried, in increasing order: train/loss, train/accuracy, validation/loss and
    # validation/accuracy, the names of the MLP head's per-epoch curves, so that one chart draws either.
    curves: dict[float, dict[str, float]]


def scores(fitted: LogisticRegression, split: str, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    probabilities = fitted.predict_proba(features)
    predicted = fitted.classes_[probabilities.argmax(1)]
    return {f"{split}/loss": float(log_loss(labels, probabilities, labels=fitted.classes_)),
            f"{split}/accuracy": float(np.mean(predicted == labels))}


def fit_linear_probe(train_features: np.ndarray, train_labels: np.ndarray, val_features: np.ndarray,
                     val_labels: np.ndarray, strengths: tuple[float, ...]) -> LinearProbe:
    """One fit per C; the best on the validation split wins (the first of equals, in the order given)."""
    scaler = StandardScaler().fit(train_features)
    train_scaled, val_scaled = scaler.transform(train_features), scaler.transform(val_features)
    fits, curves = {}, {}
    # From the strongest regularisation up, each fit starting from the last solution (they change
    # smoothly with C): a few iterations each instead of a cold start. The problem is strictly convex,
    # so where it starts does not change where it ends.
    fitted = LogisticRegression(max_iter=MAX_ITERATIONS, warm_start=True)
    for strength in sorted(set(strengths)):
        fitted.set_params(C=strength).fit(train_scaled, train_labels)
        if fitted.n_iter_.max() >= MAX_ITERATIONS:
            log.warning("C=%g stopped after %d iterations before converging", strength, MAX_ITERATIONS)
        fits[strength] = copy.deepcopy(fitted)
        curves[strength] = (scores(fitted, "train", train_scaled, train_labels) |
                            scores(fitted, "validation", val_scaled, val_labels))
        log.info("C=%g: validation accuracy %.4f after %d iterations",
                 strength, curves[strength]["validation/accuracy"], fitted.n_iter_.max())
    best = max(strengths, key=lambda strength: curves[strength]["validation/accuracy"])
    return LinearProbe(scaler, fits[best], curves)


def linear_head(probe: LinearProbe, num_classes: int) -> keras.Sequential:
    """The fitted probe as Keras layers: features in, the probe's predict_proba out."""
    weights, biases = probe.model.coef_, probe.model.intercept_
    if len(probe.model.classes_) != num_classes:
        raise ValueError(f"train: the training split holds {len(probe.model.classes_)} of {num_classes} classes")
    if num_classes == 2:  # scikit-learn keeps one row for two classes: softmax([0, z]) is its [1 - s(z), s(z)]
        weights, biases = np.vstack([np.zeros_like(weights), weights]), np.concatenate([[0.0], biases])
    # Standardised as (x - mean) · (weights / scale): Keras's Normalization divides by no less than 1e-7, which
    # would flatten features that vary by less (a random MobileNetV2's are about 1e-13 in size), so it only
    # takes the mean off, and the division goes into the weights.
    head = keras.Sequential([
        keras.Input((weights.shape[1],), name="features"),
        keras.layers.Normalization(mean=probe.scaler.mean_, variance=np.ones_like(probe.scaler.mean_), name="centre"),
        keras.layers.Dense(num_classes, activation="softmax", name="predictions"),
    ], name="head")
    scaled_weights = weights / probe.scaler.scale_
    head.get_layer("predictions").set_weights([scaled_weights.T.astype(np.float32), biases.astype(np.float32)])
    return head
