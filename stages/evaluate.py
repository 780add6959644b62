"""Stage 4: test-split accuracy, loss, per-class scores and the confusion matrix."""
import errno
import logging
import os

import numpy as np
from tqdm import tqdm

from stages import paths
from stages.atomic import exclusive, read_json, write_json
from stages.cache import load_features
from stages.classifier import load_classifier, predict_padded
from stages.cli import end_process, run_stage
from stages.frameworks import keras
from stages.params import Params
from stages.report import class_scores, confusion_counts, plot_confusion, plot_mistakes

log = logging.getLogger("evaluate")

CHECK_SAMPLE = 32  # test images also run through the saved model end to end: one batch
# How far the saved model's own features of raw images may be from the cached ones, as the largest
# per-image ||difference|| / ||cached||. Both come from the same backbone weights and differ only in
# how it ran: float32 engines (TensorFlow, XLA, OpenVINO) fuse and order sums differently (within
# 1e-4 in tests/test_engines.py), a recent GPU may compute float32 convolutions in TensorFlow's
# TF32 (10 bits of mantissa), bfloat16 keeps 8 bits (largest 0.0085 measured by
# `python -m benchmarks.precision`). A changed backbone moves them by far more. The probabilities are
# then the same head's on nearly the same features: a near-tie may flip its top class, and that is no failure.
FEATURE_TOLERANCE = {"float32": 0.01, "mixed": 0.05}
# predict() traces the backbone first (3-5 s for DenseNet-121); run eagerly, it skips that and costs about
# twice as much per image. Measured on 32 images, 2-core AMD EPYC without AVX-512: at 64x64 eagerly 1.8-2.0 s
# against 5.1-5.2 s, at 224x224 12.6-15.2 s against 7.1-10.4 s. Small images, where tracing is most of it, run eagerly.
EAGER_CHECK_MAX_SIZE = 128


def test_probabilities(model: keras.Model, about: dict, cached: np.ndarray | None, batch_size: int = 64) -> np.ndarray:
    """From the cached features through the head when they still describe the model; otherwise the whole
    model on images."""
    if cached is not None:
        return model.get_layer(about["head_layer"]).predict(cached, batch_size=batch_size, verbose=0)
    images = np.load(paths.images("test"), mmap_mode="r")
    batch_size = min(batch_size, len(images))
    starts = tqdm(range(0, len(images), batch_size), desc="evaluate test images", unit="batch", disable=None)
    return np.concatenate([predict_padded(model, images[start:start + batch_size], batch_size) for start in starts])


def not_retracing(record: logging.LogRecord) -> bool:
    """Run eagerly, Keras wraps each grouped convolution (ConvNeXt's) in a new tf.function at every call, and
    TensorFlow warns of "retracing" from the fifth on: expected here, and nothing the user could change."""
    return "retracing" not in record.getMessage()


def saved_model_features(model: keras.Model, head_layer: str, images: np.ndarray) -> np.ndarray:
    """What the saved model's backbone makes of raw images: the input of its head."""
    backbone = keras.Model(model.input, model.get_layer(head_layer).input)
    if images.shape[1] > EAGER_CHECK_MAX_SIZE:
        return backbone.predict(images, verbose=0)
    tensorflow_log = logging.getLogger("tensorflow")
    tensorflow_log.addFilter(not_retracing)
    try:
        return keras.ops.convert_to_numpy(backbone(images, training=False))
    finally:
        tensorflow_log.removeFilter(not_retracing)


def relative_differences(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per row, ||features - reference|| / ||reference||."""
    return (np.linalg.norm(features - reference, axis=1) /
            np.maximum(np.linalg.norm(reference, axis=1), np.finfo(np.float32).tiny))


def check_saved_model(model: keras.Model, about: dict, cached: np.ndarray | None, probabilities: np.ndarray) -> dict:
    """The saved model on raw uint8 images must compute the features the pipeline measured with.

    Those are two independent paths through the backbone (extract's engine, and the saved model). When
    the model was fine-tuned or trained on images, the measurement already ran the saved model itself,
    and there is nothing independent to compare with: the result says so.
    """
    if cached is None:
        log.info("saved-model check: none possible, the test split already ran through the saved model")
        return {"compared_with": "nothing: the test split ran through the saved model itself"}
    precision = read_json(paths.FEATURES_INFO)["precision"]
    tolerance = FEATURE_TOLERANCE[precision]
    sample = np.asarray(np.load(paths.images("test"), mmap_mode="r")[:CHECK_SAMPLE])
    own_features = saved_model_features(model, about["head_layer"], sample)
    difference = float(relative_differences(own_features, cached[:len(sample)]).max())
    own_probabilities = model.get_layer(about["head_layer"]).predict(own_features, verbose=0)
    flipped = int(np.sum(own_probabilities.argmax(1) != probabilities[:len(sample)].argmax(1)))
    log.info("saved-model check: features of %d raw images within %.2g of the cached ones (tolerance %g), "
             "%d top classes flipped", len(sample), difference, tolerance, flipped)
    if not difference <= tolerance:
        raise ValueError(
            f"evaluate: {paths.INFERENCE_MODEL} computes features of raw test images up to {difference:.3g} away "
            f"from the cached ones (tolerance {tolerance} for extract.precision {precision}): the model or "
            f"data/features changed after training; run `dvc repro --force extract train`"
        )
    return {"compared_with": f"cached features ({precision})", "images": len(sample),
            "max_relative_feature_difference": difference, "tolerance": tolerance, "flipped": flipped}


def run(params: Params) -> None:
    with exclusive(paths.METRICS):  # one evaluate at a time writes metrics/
        evaluate()


def evaluate() -> None:
    classes = read_json(paths.PREPARED_INFO)["classes"]
    if not paths.INFERENCE_MODEL.is_file():  # said as for any stage's missing input (load_classifier offers --model)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(paths.INFERENCE_MODEL))
    model, _, about = load_classifier(paths.INFERENCE_MODEL)
    if not about:
        raise FileNotFoundError(f"no {paths.MODEL_INFO} beside the model; run `dvc repro train`")
    one_hot = np.load(paths.labels("test")).astype(np.float32)
    # Read once, for the measurement and for the check against the saved model.
    cached = load_features("test") if about["matches_cached_features"] else None
    probabilities = test_probabilities(model, about, cached)
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
    check = check_saved_model(model, about, cached, probabilities)
    log.info("test accuracy %.4f, loss %.4f on %d images", metrics["accuracy"], loss, len(actual))
    write_json(paths.METRICS_FILE, metrics)
    write_json(paths.SAVED_MODEL_CHECK, check)
    write_json(paths.PER_CLASS, per_class)
    write_json(paths.CONFUSION, [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(actual, predicted)])
    plot_confusion(counts, classes)
    plot_mistakes(probabilities, actual, classes)


def main() -> None:
    run_stage(run)


if __name__ == "__main__":
    main()
    end_process()
