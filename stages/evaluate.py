"""Stage 4: test-split accuracy, loss, per-class scores and the confusion matrix."""
import errno
import logging
import os

import numpy as np
from tqdm import tqdm

from stages.lib import paths
from stages.lib.atomic import atomic_files, holding, json_text, read_json
from stages.lib.cache import load_features
from stages.lib.classifier import load_classifier, predict_padded
from stages.lib.errors import run_stage
from stages.lib.fast_exit import end_process
from stages.lib.frameworks import keras
from stages.lib.params import Params
from stages.lib.saved_model_check import check_saved_model
from stages.lib.figures import plot_confusion, plot_mistakes
from stages.lib.scores import class_scores, confusion_counts

log = logging.getLogger("evaluate")

def test_probabilities(model: keras.Model, record: dict, cached: np.ndarray | None, batch_size: int = 64) -> np.ndarray:
    """From the cached features through the head when they still describe the model; otherwise the whole
    model on images."""
    if cached is not None:
        return model.get_layer(record["head_layer"]).predict(cached, batch_size=batch_size, verbose=0)
    images = np.load(paths.images("test"), mmap_mode="r")
    batch_size = min(batch_size, len(images))
    starts = tqdm(range(0, len(images), batch_size), desc="evaluate test images", unit="batch", disable=None)
    return np.concatenate([predict_padded(model, images[start:start + batch_size], batch_size) for start in starts])


def run(params: Params) -> None:
    with holding(paths.PREPARED, paths.FEATURES, paths.MODELS, paths.METRICS):  # inputs read whole, one writer
        evaluate()


def evaluate() -> None:
    classes = read_json(paths.PREPARED_INFO)["classes"]
    if not paths.INFERENCE_MODEL.is_file():  # said as for any stage's missing input (load_classifier offers --model)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(paths.INFERENCE_MODEL))
    model, _, record = load_classifier(paths.INFERENCE_MODEL)
    if not {"head_layer", "matches_cached_features"} <= set(record):
        raise FileNotFoundError(f"no {paths.MODEL_RECORD} of train's beside the model; run `dvc repro train`")
    one_hot = np.load(paths.labels("test")).astype(np.float32)
    # Read once, for the measurement and for the check against the saved model.
    cached = load_features("test") if record["matches_cached_features"] else None
    probabilities = test_probabilities(model, record, cached)
    actual, predicted = one_hot.argmax(1), probabilities.argmax(1)
    loss = float(np.mean(keras.ops.convert_to_numpy(keras.losses.categorical_crossentropy(one_hot, probabilities))))
    counts = confusion_counts(actual, predicted, len(classes))
    per_class = class_scores(counts, classes)
    metrics = {
        "accuracy": float(np.mean(actual == predicted)),
        "loss": loss,
        "macro_f1": float(np.mean([scores["f1"] for scores in per_class])),
        "test_images": len(actual),  # for the accuracy's binomial error
    }
    check = check_saved_model(model, record, cached, probabilities)
    log.info("test accuracy %.4f, loss %.4f on %d images", metrics["accuracy"], loss, len(actual))
    confusion = [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(actual, predicted)]
    # All written before any replaces the last run's: a full disk leaves that run's metrics whole.
    with atomic_files(paths.METRICS_FILE, paths.SAVED_MODEL_CHECK, paths.PER_CLASS, paths.CONFUSION,
                      paths.CONFUSION_PNG, paths.MISTAKES_PNG) as partial:
        for path, data in ((paths.METRICS_FILE, metrics), (paths.SAVED_MODEL_CHECK, check),
                           (paths.PER_CLASS, per_class), (paths.CONFUSION, confusion)):
            partial[path].write_text(json_text(data))
        plot_confusion(counts, classes, partial[paths.CONFUSION_PNG])
        plot_mistakes(probabilities, actual, classes, partial[paths.MISTAKES_PNG])


def main() -> None:
    run_stage(run)


if __name__ == "__main__":
    main()
    end_process()
