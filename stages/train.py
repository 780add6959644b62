"""Stage 3: fit the seed's head (Dense 256 ReLU -> Dense 10 softmax) on the frozen backbone's output."""
import logging
import math

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from stages import paths
from stages.atomic import atomic_file, read_json
from stages.backbones import build_backbone, build_head, image_model
from stages.cli import run_stage
from stages.params import Params, TrainParams

log = logging.getLogger("train")


class CachedImages(keras.utils.PyDataset):
    """Shuffled batches read from the memory-mapped image cache: the seed's way, in bounded memory."""

    def __init__(self, split: str, batch_size: int, seed: int | None):
        super().__init__()
        self.images = np.load(paths.images(split), mmap_mode="r")
        self.labels = np.load(paths.labels(split)).astype(np.float32)
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed) if seed is not None else None
        self.order = np.arange(len(self.labels))
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int):
        batch = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        return self.images[batch], self.labels[batch]

    def on_epoch_end(self) -> None:
        if self.rng is not None:
            self.rng.shuffle(self.order)


def compile_for_training(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )


def fit(model: keras.Model, train: TrainParams, data: dict, callbacks: list) -> keras.callbacks.History:
    compile_for_training(model, train.learning_rate)
    stop_on_nan = keras.callbacks.TerminateOnNaN()
    history = model.fit(epochs=train.epochs, callbacks=[stop_on_nan, *callbacks], verbose=2, **data)
    losses = history.history["loss"]
    diverged = [epoch for epoch, loss in enumerate(losses, start=1) if not math.isfinite(loss)]
    if diverged or stop_on_nan.model.stop_training:
        raise ValueError(
            f"train: the loss became {losses[-1]} at epoch {diverged[0] if diverged else len(losses)}; "
            f"lower train.learning_rate (now {train.learning_rate}) and check the features, then run again"
        )
    return history


def feature_data(batch_size: int) -> dict:
    def split(name):
        return np.load(paths.features(name)), np.load(paths.labels(name)).astype(np.float32)

    (train_x, train_y), val = split("train"), split("val")
    return dict(x=train_x, y=train_y, validation_data=val, batch_size=batch_size, shuffle=True)


def image_data(batch_size: int, seed: int) -> dict:
    return dict(x=CachedImages("train", batch_size, seed), validation_data=CachedImages("val", batch_size, None))


def save_model(model: keras.Model) -> None:
    """The whole classifier, as .keras and as the seed's .h5; written aside, renamed when complete."""
    for path in (paths.INFERENCE_MODEL, paths.LEGACY_MODEL):
        with atomic_file(path) as partial:
            model.save(partial)
    log.info("saved %s and %s", paths.INFERENCE_MODEL, paths.LEGACY_MODEL)


def run(params: Params) -> None:
    model_params, train = params.model, params.train
    prepared, extracted = read_json(paths.PREPARED_INFO), read_json(paths.FEATURES_INFO)
    size, classes = prepared["image_size"], prepared["classes"]
    backbone = build_backbone(model_params.backbone, model_params.weights, size, model_params.seed)
    keras.utils.set_random_seed(train.seed)
    tf.config.experimental.enable_op_determinism()
    head = build_head(backbone.output.shape[-1], model_params.head_units, len(classes))
    if extracted["enabled"]:
        log.info("training the head on cached %s features for %d epochs", model_params.backbone, train.epochs)
        trainee, data = head, feature_data(train.batch_size)
    else:
        log.info("training through the frozen %s on images for %d epochs", model_params.backbone, train.epochs)
        trainee = image_model(model_params.backbone, backbone, size, head, input_size=size)
        data = image_data(train.batch_size, train.seed)
    with Live(dir=str(paths.TRAIN_LOG), dvcyaml=False, save_dvc_exp=False) as live:
        fit(trainee, train, data, [DVCLiveCallback(live=live)])
    classifier = image_model(model_params.backbone, backbone, size, head)
    # Compiled like the seed's saved model, so load_model(...).evaluate(...) works as it did.
    compile_for_training(classifier, train.learning_rate)
    classifier.optimizer.build(classifier.trainable_variables)
    save_model(classifier)


def main() -> None:
    run_stage(run)


if __name__ == "__main__":
    main()
