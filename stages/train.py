"""Stage 3: fit the seed's head (Dense 256 ReLU -> Dense 10 softmax) on the frozen backbone's output,
then, if asked, fine-tune the backbone's top layers on images; or, with train.head: linear, fit a
linear probe on the cached features (stages/heads.py)."""
import logging
import math
import sys
import time

import numpy as np
from dvclive import Live

from stages import paths
from stages.atomic import atomic_directory, exclusive, read_json, write_json
from stages.batches import Batches, EpochOrder, split_batches
from stages.classifier import save_classifier
from stages.cache import load_features
from stages.cli import end_process, run_stage
from stages.frameworks import keras, tf
from stages.models import build_backbone, build_head, image_model, require_finite_weights, unfreeze_top
from stages.params import Params
from stages.strategy import choose_strategy, make_reproducible

log = logging.getLogger("train")


def curve_name(keras_name: str) -> str:
    """Keras's loss and val_loss as train/loss and validation/loss: dvclive's own callback would name the
    validation split's figures eval/..., which reads like the test split's in `dvc exp show`."""
    split, name = ("validation", keras_name[4:]) if keras_name.startswith("val_") else ("train", keras_name)
    return f"{split}/{name}"


class LiveEpochs(keras.callbacks.Callback):
    """Per-epoch metrics to dvclive; steps keep counting from the head phase into fine-tuning."""

    def __init__(self, live: Live):
        super().__init__()
        self.live = live

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        for name, value in (logs or {}).items():
            self.live.log_metric(curve_name(name), value)
        self.live.next_step()


# A step of the head on 32 features is a few microseconds of arithmetic and much more of Keras's
# per-call overhead: run many steps per call. Epochs still end on time (the batches' count is known).
# A step through the backbone on images is the other way round, and tracing Keras's multi-step loop
# around it costs seconds (5 s for DenseNet-121 at 32x32 here): one step per call there.
STEPS_PER_CALL = 64


def steps_per_call(on_features: bool) -> int:
    # Keras 3.15's multi-step loop fails over several devices ("You must feed a value for placeholder").
    alone = tf.distribute.get_strategy().num_replicas_in_sync == 1
    return STEPS_PER_CALL if on_features and alone else 1


def compile_for_training(model: keras.Model, learning_rate: float, steps_per_execution: int = 1,
                         jit_compile: bool | str = "auto") -> None:
    # The optimizer's and the metric's variables made here, not inside the first traced step: a step that
    # creates variables is traced twice, and a step through DenseNet-121 takes seconds to trace.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                  steps_per_execution=steps_per_execution, jit_compile=jit_compile)
    model.optimizer.build(model.trainable_variables)


def fit(model: keras.Model, rate_key: str, learning_rate: float, epochs: int, train: Batches, val: Batches,
        live: Live, on_features: bool, xla: bool = False) -> None:
    """Train and log; a NaN loss stops at once, naming the learning-rate key to lower."""
    compile_for_training(model, learning_rate, steps_per_call(on_features), jit_compile=xla)
    stop_on_nan = keras.callbacks.TerminateOnNaN()
    verbose = 1 if sys.stdout.isatty() else 2  # a progress bar with ETA in a terminal, a line per epoch in logs
    history = model.fit(train.dataset(), validation_data=val.dataset(), epochs=epochs,
                        callbacks=[EpochOrder(train), stop_on_nan, LiveEpochs(live)], shuffle=False,
                        verbose=verbose)
    losses = history.history["loss"]
    diverged = [epoch for epoch, loss in enumerate(losses, start=1) if not math.isfinite(loss)]
    if diverged or stop_on_nan.model.stop_training:
        raise ValueError(
            f"train: the loss became {losses[-1]} at epoch {diverged[0] if diverged else len(losses)}; "
            f"lower {rate_key} (now {learning_rate}) and check the inputs, then run again"
        )


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
    # Here, not at the top: scikit-learn and the SciPy it loads take 1-1.5 s to import, which the seed's head
    # (train.head: mlp) does not need.
    from stages.heads import fit_linear_probe, linear_head

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
    # One train at a time writes models/ (and metrics/train); variables made in the strategy's scope are
    # mirrored on every GPU, one device otherwise.
    with exclusive(paths.MODELS), choose_strategy().scope():
        train_and_save(params)


def train_and_save(params: Params) -> None:
    model_params, train = params.model, params.train
    prepared, extracted = read_json(paths.PREPARED_INFO), read_json(paths.FEATURES_INFO)
    size, classes, use_features = prepared["image_size"], prepared["classes"], extracted["enabled"]
    backbone = build_backbone(model_params.backbone, model_params.weights, size, model_params.seed)
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
