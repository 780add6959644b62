"""Stage 3: fit the seed's head (Dense 256 ReLU -> Dense 10 softmax) on the frozen backbone's output,
then, if asked, fine-tune the backbone's top layers on images; or, with train.head: linear, fit a
linear probe on the cached features (stages/lib/heads.py)."""
import logging
import math
import time

import numpy as np

from stages.lib import paths
from stages.lib.atomic import atomic_directory, holding, read_json, write_json
from stages.lib.batches import split_batches
from stages.lib.classifier import save_classifier
from stages.lib.cache import load_features
from stages.lib.errors import run_stage
from stages.lib.fast_exit import end_process
from stages.lib.fitting import Live, compile_for_training, fit
from stages.lib.frameworks import keras
from stages.lib.models import (build_backbone, build_head, image_model, require_finite_weights, require_layers,
                               unfreeze_top)
from stages.lib.params import Params
from stages.lib.strategy import choose_strategy, make_reproducible

log = logging.getLogger("train")


def fine_tune(params: Params, backbone: keras.Model, head: keras.Model, size: int, live: Live) -> None:
    """Unfreeze the backbone's top layers and train them, with the head, on images."""
    train = params.train
    tuned = unfreeze_top(backbone, train.fine_tune_layers)
    log.info("fine-tuning the top %d layers (%d with weights) for %d epochs",
             train.fine_tune_layers, len(tuned), train.fine_tune_epochs)
    trainee = image_model(params.model.backbone, backbone, size, head, input_size=size, augment=train.augment)
    fit(trainee, "train.fine_tune_learning_rate", train.fine_tune_learning_rate, train.fine_tune_epochs,
        split_batches("train", False, train.batch_size, train.seed + 1),
        split_batches("val", False, train.batch_size, None), live, on_features=False)


def fit_linear(strengths: tuple[float, ...], num_classes: int, live: Live) -> keras.Model:
    """The linear probe on the cached features; each C tried is a step of dvclive's curves."""
    # Here, not at the top: scikit-learn and the SciPy it loads take over a second to import, which the
    # seed's head (train.head: mlp) does not need.
    from stages.lib.heads import fit_linear_probe, linear_head

    log.info("fitting the linear probe for C in %s", ", ".join(f"{c:g}" for c in strengths))
    train_labels, val_labels = (np.load(paths.labels(split)).argmax(1) for split in ("train", "val"))
    probe = fit_linear_probe(load_features("train"), train_labels, load_features("val"), val_labels, strengths)
    for strength, curves in probe.curves.items():
        live.log_metric("linear/log10_c", math.log10(strength))
        for name, value in curves.items():
            live.log_metric(name, value)
        live.next_step()
    chosen = probe.model.C
    # The summary holds the chosen C's figures, not the last C's.
    for name, value in probe.curves[chosen].items():
        split, metric = name.split("/")
        live.summary[split][metric] = value
    live.summary["linear"]["log10_c"], live.summary["linear_c"] = math.log10(chosen), float(chosen)
    log.info("C=%g has the best validation accuracy, %.4f", chosen, probe.curves[chosen]["validation/accuracy"])
    return linear_head(probe, num_classes)


def train_head(params: Params, backbone: keras.Model, size: int, num_classes: int, use_features: bool, xla: bool,
               live: Live) -> tuple[keras.Model, dict]:
    """The head (then fine-tuning, if asked), logged to dvclive; the head and the seconds each phase took."""
    model_params, train = params.model, params.train
    timing, started = {}, time.perf_counter()
    if train.head == "linear":
        head = fit_linear(train.linear_c, num_classes, live)
    else:
        head = build_head(backbone.output.shape[-1], model_params.head_units, num_classes)
        log.info("training the head on %s for %d epochs", "cached features" if use_features else "images",
                 train.epochs)
        trainee = head if use_features else image_model(
            model_params.backbone, backbone, size, head, input_size=size, augment=train.augment)
        fit(trainee, "train.learning_rate", train.learning_rate, train.epochs,
            split_batches("train", use_features, train.batch_size, train.seed),
            split_batches("val", use_features, train.batch_size, None), live, on_features=use_features, xla=xla)
    timing["head_seconds"] = time.perf_counter() - started
    if train.fine_tune_layers:
        fine_tune(params, backbone, head, size, live)
        timing["fine_tune_seconds"] = time.perf_counter() - started - timing["head_seconds"]
    return head, timing


def run(params: Params) -> None:
    # One train at a time writes models/ (and metrics/train), and reads its inputs whole; variables made in
    # the strategy's scope are mirrored on every GPU, one device otherwise.
    with holding(paths.PREPARED, paths.FEATURES, paths.MODELS), choose_strategy().scope():
        train_and_save(params)


def train_and_save(params: Params) -> None:
    model_params, train = params.model, params.train
    prepared, extracted = read_json(paths.PREPARED_INFO), read_json(paths.FEATURES_INFO)
    size, classes, use_features = prepared["image_size"], prepared["classes"], extracted["enabled"]
    backbone = build_backbone(model_params.backbone, model_params.weights, size, model_params.seed)
    require_layers(backbone, train.fine_tune_layers)
    keras.utils.set_random_seed(train.seed)
    # The head alone on cached features: the saved model then still matches them (fine-tuning changes the backbone).
    head_on_features = use_features and not train.fine_tune_layers
    xla = make_reproducible(head_alone=head_on_features)
    # dvclive writes the curves aside: they replace the last run's only once the model they describe is saved.
    with atomic_directory(paths.TRAIN_LOG) as curves:
        with Live(dir=str(curves), dvcyaml=False, save_dvc_exp=False) as live:
            head, timing = train_head(params, backbone, size, len(classes), use_features, xla, live)
        backbone.trainable = False
        classifier = image_model(model_params.backbone, backbone, size, head)
        require_finite_weights(classifier, f"lower train.learning_rate (now {train.learning_rate}) and run again")
        # Compiled like the seed's saved model, so load_model(...).evaluate(...) works as it did.
        compile_for_training(classifier, train.learning_rate)
        save_classifier(classifier, classes, {"head_layer": head.name, "matches_cached_features": head_on_features})
    write_json(paths.TRAIN_TIMING, timing)
    log.info("saved %s, %s and %s", paths.INFERENCE_MODEL, paths.LEGACY_MODEL, paths.CLASSES)


def main() -> None:
    run_stage(run)


if __name__ == "__main__":
    main()
    end_process()
