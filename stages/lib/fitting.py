"""Fitting a Keras model the pipeline's way: Adam and cross-entropy, each epoch's figures to dvclive, a
diverging loss stopped with the key to change."""
import math
import sys

from stages.lib.batches import Batches, EpochOrder
from stages.lib.frameworks import extras_hidden, keras, tf

with extras_hidden():  # dvclive imports pandas too, for DataFrames it is never given here
    from dvclive import Live


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


class StepsProgress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, counting the steps that ran: a call of many steps reports its last possible
    step, past the epoch's end when fewer were left (64/57)."""

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        super().on_train_batch_end(min(batch, self.target - 1) if self.target else batch, logs)


# A step of the head on features is mostly Keras's per-call overhead: many steps per call. Tracing the
# multi-step loop around the backbone costs seconds, more than it saves: one step per call on images
# (benchmarks/README.md#figures-behind-choices-in-the-code).
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
                        callbacks=[EpochOrder(train), stop_on_nan, LiveEpochs(live), StepsProgress()], shuffle=False,
                        verbose=verbose)
    losses = history.history["loss"]
    diverged = [epoch for epoch, loss in enumerate(losses, start=1) if not math.isfinite(loss)]
    if diverged or stop_on_nan.model.stop_training:
        raise ValueError(
            f"train: the loss became {losses[-1]} at epoch {diverged[0] if diverged else len(losses)}; "
            f"lower {rate_key} (now {learning_rate}) and check the inputs, then run again"
        )
