"""Stage 3: fit the seed's head (Dense 256 ReLU -> Dense 10 softmax) on the frozen backbone's output,
then, if asked, fine-tune the backbone's top layers on images."""
import logging
import math
import sys

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from dvclive.utils import standardize_metric_name

from stages import paths
from stages.atomic import atomic_file, read_json, write_json
from stages.backbones import build_backbone, build_head, image_model, unfreeze_top
from stages.cli import run_stage
from stages.params import Params
from stages.strategy import choose_strategy

log = logging.getLogger("train")


class Batches:
    """Batches of a split in an order drawn afresh for every epoch from (seed, epoch).

    Features and memory-mapped images are batched the same way, so both training paths see the
    same images in the same order. The order depends on the epoch number alone, not on how often
    Keras happens to iterate (under MirroredStrategy it iterates once more to build the model).
    """

    def __init__(self, inputs: np.ndarray, labels: np.ndarray, batch_size: int, seed: int | None):
        self.inputs, self.labels, self.batch_size, self.seed = inputs, labels.astype(np.float32), batch_size, seed
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def order(self) -> np.ndarray:
        if self.seed is None:
            return np.arange(len(self.labels))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))

    def dataset(self) -> tf.data.Dataset:
        """One pass over the split, read ahead while the model trains.

        As tf.data, a batch is split across the devices of a MirroredStrategy (a Keras PyDataset
        would give each device batches of its own), so any device count takes the same steps.
        """
        orders = tf.data.Dataset.from_generator(lambda: iter([self.order()]),
                                                output_signature=tf.TensorSpec((None,), tf.int64))
        indices = orders.unbatch().batch(self.batch_size).map(tf.sort)  # sorted: memmap locality
        labels = tf.constant(self.labels)
        rows = self.rows_on_disk if isinstance(self.inputs, np.memmap) else self.rows_in_memory()
        batches = indices.map(lambda batch: (rows(batch), tf.gather(labels, batch)),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return batches.apply(tf.data.experimental.assert_cardinality(len(self))).prefetch(2)

    def rows_in_memory(self):
        """Features are small: gathered inside the pipeline, with no Python per batch."""
        inputs = tf.constant(self.inputs)
        return lambda batch: tf.gather(inputs, batch)

    def rows_on_disk(self, batch: tf.Tensor) -> tf.Tensor:
        """Images stay memory-mapped: numpy reads just the batch's rows."""
        rows = tf.numpy_function(lambda indices: self.inputs[indices], [batch], tf.as_dtype(self.inputs.dtype))
        rows.set_shape((None, *self.inputs.shape[1:]))
        return rows


class EpochOrder(keras.callbacks.Callback):
    """Tells the training batches which epoch begins, so they draw its order."""

    def __init__(self, batches: Batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.batches.epoch = epoch


def split_batches(split: str, use_features: bool, batch_size: int, seed: int | None) -> Batches:
    inputs = np.load(paths.features(split)) if use_features else np.load(paths.images(split), mmap_mode="r")
    return Batches(inputs, np.load(paths.labels(split)), batch_size, seed)


class LiveEpochs(keras.callbacks.Callback):
    """Per-epoch metrics to dvclive; steps keep counting from the head phase into fine-tuning."""

    def __init__(self, live: Live):
        super().__init__()
        self.live = live

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        for name, value in (logs or {}).items():
            # dvclive's own naming for Keras logs: loss -> train/loss, val_loss -> eval/loss.
            self.live.log_metric(standardize_metric_name(name, "dvclive.keras"), value)
        self.live.next_step()


# A step of the head on 32 features is a few microseconds of arithmetic and much more of Keras's
# per-call overhead: run many steps per call. Epochs still end on time (the batches' count is known).
STEPS_PER_CALL = 64


def steps_per_call() -> int:
    # Keras 3.15's multi-step loop fails over several devices ("You must feed a value for placeholder").
    return STEPS_PER_CALL if tf.distribute.get_strategy().num_replicas_in_sync == 1 else 1


def make_reproducible(head_alone: bool) -> bool:
    """Same params, same bytes: returns whether training may use XLA, and sets op determinism if not.

    XLA fuses the head's tiny steps (about twice as fast on a CPU) and on a CPU computes the same bytes
    run after run. Keras refuses XLA under TensorFlow's op determinism, which everything else needs:
    a GPU's reductions, and the backbone's layers when training on images. (XLA also fails under
    MirroredStrategy in Keras 3.15.)
    """
    one_cpu = not tf.config.list_physical_devices("GPU") and tf.distribute.get_strategy().num_replicas_in_sync == 1
    xla = head_alone and one_cpu
    if not xla:
        tf.config.experimental.enable_op_determinism()
    return xla


def compile_for_training(model: keras.Model, learning_rate: float, steps_per_execution: int = 1,
                         jit_compile: bool | str = "auto") -> None:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution, jit_compile=jit_compile)


def fit(model: keras.Model, rate_key: str, learning_rate: float, epochs: int, train: Batches, val: Batches,
        live: Live, xla: bool = False) -> None:
    """Train and log; a NaN loss stops at once, naming the learning-rate key to lower."""
    compile_for_training(model, learning_rate, steps_per_call(), jit_compile=xla)
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


def save_model(model: keras.Model, classes: list[str]) -> None:
    """The whole classifier as .keras and as the seed's .h5, and its class names; each written aside, then renamed."""
    for path in (paths.INFERENCE_MODEL, paths.LEGACY_MODEL):
        with atomic_file(path) as partial:
            model.save(partial)
    write_json(paths.CLASSES, classes)
    log.info("saved %s, %s and %s", paths.INFERENCE_MODEL, paths.LEGACY_MODEL, paths.CLASSES)


def fine_tune(params: Params, backbone: keras.Model, head: keras.Model, size: int, live: Live) -> None:
    """Unfreeze the backbone's top layers and train them, with the head, on images."""
    train = params.train
    tuned = unfreeze_top(backbone, train.fine_tune_layers)
    log.info("fine-tuning the top %d layers (%d with weights) for %d epochs",
             train.fine_tune_layers, len(tuned), train.fine_tune_epochs)
    trainee = image_model(params.model.backbone, backbone, size, head, input_size=size, augment=train.augment)
    fit(trainee, "train.fine_tune_learning_rate", train.fine_tune_learning_rate, train.fine_tune_epochs,
        split_batches("train", False, train.batch_size, train.seed + 1),
        split_batches("val", False, train.batch_size, None), live)


def run(params: Params) -> None:
    # Variables made in the strategy's scope are mirrored on every GPU; one device otherwise.
    with choose_strategy().scope():
        train_and_save(params)


def train_and_save(params: Params) -> None:
    model_params, train = params.model, params.train
    prepared, extracted = read_json(paths.PREPARED_INFO), read_json(paths.FEATURES_INFO)
    size, classes, use_features = prepared["image_size"], prepared["classes"], extracted["enabled"]
    backbone = build_backbone(model_params.backbone, model_params.weights, size, model_params.seed)
    keras.utils.set_random_seed(train.seed)
    xla = make_reproducible(head_alone=use_features and not train.fine_tune_layers)
    head = build_head(backbone.output.shape[-1], model_params.head_units, len(classes))
    with Live(dir=str(paths.TRAIN_LOG), dvcyaml=False, save_dvc_exp=False) as live:
        log.info("training the head on %s for %d epochs", "cached features" if use_features else "images", train.epochs)
        trainee = head if use_features else image_model(
            model_params.backbone, backbone, size, head, input_size=size, augment=train.augment)
        fit(trainee, "train.learning_rate", train.learning_rate, train.epochs,
            split_batches("train", use_features, train.batch_size, train.seed),
            split_batches("val", use_features, train.batch_size, None), live, xla=xla)
        if train.fine_tune_layers:
            fine_tune(params, backbone, head, size, live)
    backbone.trainable = False
    classifier = image_model(model_params.backbone, backbone, size, head)
    # Compiled like the seed's saved model, so load_model(...).evaluate(...) works as it did.
    compile_for_training(classifier, train.learning_rate)
    classifier.optimizer.build(classifier.trainable_variables)
    save_model(classifier, classes)


def main() -> None:
    run_stage(run)


if __name__ == "__main__":
    main()
