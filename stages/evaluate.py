"""Stage 4: test-split accuracy, loss, per-class scores and the confusion matrix."""
import logging

import keras
import matplotlib
import numpy as np
from sklearn.metrics import classification_report, confusion_matrix
from tqdm import tqdm

from stages import paths
from stages.atomic import atomic_file, read_json, write_json
from stages.cli import run_stage
from stages.params import Params

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

log = logging.getLogger("evaluate")

CHECK_SAMPLE = 32  # test images also run through the saved model end to end: one batch
CHECK_AGREEMENT = 0.98  # float noise may flip a near-tie; more than that is a broken model


def test_probabilities(model: keras.Model, use_features: bool, batch_size: int = 64) -> np.ndarray:
    """From cached features through the head when they still fit the model; otherwise the whole model on images."""
    if use_features:
        return model.get_layer("head").predict(np.load(paths.features("test")), batch_size=batch_size, verbose=0)
    images = np.load(paths.images("test"), mmap_mode="r")
    starts = tqdm(range(0, len(images), batch_size), desc="evaluate test images", unit="batch", disable=None)
    return np.concatenate([model.predict_on_batch(images[start:start + batch_size]) for start in starts])


def check_saved_model(model: keras.Model, probabilities: np.ndarray) -> dict:
    """The saved model on raw uint8 images must predict what the pipeline measured."""
    sample = np.asarray(np.load(paths.images("test"), mmap_mode="r")[:CHECK_SAMPLE])
    end_to_end = model.predict(sample, verbose=0)
    agreement = float(np.mean(end_to_end.argmax(1) == probabilities[:len(sample)].argmax(1)))
    largest_difference = float(np.abs(end_to_end - probabilities[:len(sample)]).max())
    if agreement < CHECK_AGREEMENT:
        raise ValueError(
            f"evaluate: {paths.INFERENCE_MODEL} agrees with the measured predictions on only {agreement:.0%} "
            f"of {len(sample)} test images; run `dvc repro --force extract` to rebuild them"
        )
    return {"images": len(sample), "agreement": agreement, "max_probability_difference": largest_difference}


def plot_confusion(matrix: np.ndarray, classes: list[str]) -> None:
    figure, axes = plt.subplots(figsize=(8, 7))
    axes.imshow(matrix, cmap="Blues")
    axes.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="actual",
             title="Test-split confusion matrix (counts)")
    axes.set_xticklabels(classes, rotation=45, ha="right")
    axes.set_yticklabels(classes)
    for (row, col), count in np.ndenumerate(matrix):
        axes.text(col, row, str(count), ha="center", va="center",
                  color="white" if count > matrix.max() / 2 else "black", fontsize=8)
    figure.tight_layout()
    with atomic_file(paths.CONFUSION_PNG) as partial:
        figure.savefig(partial, dpi=100)
    plt.close(figure)


def plot_mistakes(probabilities: np.ndarray, actual: np.ndarray, classes: list[str], count: int = 16) -> None:
    """The most confident wrong predictions on the test split, as a grid of images."""
    predicted, confidence = probabilities.argmax(1), probabilities.max(1)
    wrong = np.flatnonzero(predicted != actual)
    worst = wrong[np.argsort(-confidence[wrong])][:count]
    images = np.load(paths.images("test"), mmap_mode="r")
    columns = 4
    rows = max(1, -(-len(worst) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 2.6, rows * 2.9), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, worst):
        axis.imshow(images[index])
        axis.set_title(f"true: {classes[actual[index]]}\npredicted: {classes[predicted[index]]}\n"
                       f"p = {confidence[index]:.2f}", fontsize=8)
    if not len(worst):
        axes.flat[0].text(0.5, 0.5, "no mistakes on the test split", ha="center", va="center")
    figure.suptitle("Most confident mistakes (test split)")
    figure.tight_layout()
    with atomic_file(paths.MISTAKES_PNG) as partial:
        figure.savefig(partial, dpi=100)
    plt.close(figure)


def run(params: Params) -> None:
    classes = read_json(paths.PREPARED_INFO)["classes"]
    # Fine-tuning changed the backbone, so the cached features no longer describe the model.
    use_features = read_json(paths.FEATURES_INFO)["enabled"] and params.train.fine_tune_layers == 0
    model = keras.models.load_model(paths.INFERENCE_MODEL, safe_mode=True)
    one_hot = np.load(paths.labels("test")).astype(np.float32)
    probabilities = test_probabilities(model, use_features)
    actual, predicted = one_hot.argmax(1), probabilities.argmax(1)
    loss = float(np.mean(keras.ops.convert_to_numpy(keras.losses.categorical_crossentropy(one_hot, probabilities))))
    report = classification_report(actual, predicted, labels=range(len(classes)), target_names=classes,
                                   output_dict=True, zero_division=0)
    metrics = {
        "accuracy": float(np.mean(actual == predicted)),
        "loss": loss,
        "macro_f1": report["macro avg"]["f1-score"],
        "saved_model_check": check_saved_model(model, probabilities),
    }
    per_class = {name: {key: report[name][key] for key in ("precision", "recall", "f1-score", "support")}
                 for name in classes}
    log.info("test accuracy %.4f, loss %.4f on %d images", metrics["accuracy"], loss, len(actual))
    paths.METRICS.mkdir(exist_ok=True)
    write_json(paths.METRICS_FILE, metrics)
    write_json(paths.PER_CLASS, per_class)
    write_json(paths.CONFUSION, [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(actual, predicted)])
    plot_confusion(confusion_matrix(actual, predicted, labels=range(len(classes))), classes)
    plot_mistakes(probabilities, actual, classes)


def main() -> None:
    run_stage(run)


if __name__ == "__main__":
    main()
