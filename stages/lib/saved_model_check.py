"""The saved model's own check: on raw uint8 test images it must compute the features the pipeline
measured with, two independent paths through one backbone (extract's engine, and the saved model)."""
import logging

import numpy as np

from stages.lib import paths
from stages.lib.atomic import read_json
from stages.lib.frameworks import keras

log = logging.getLogger("evaluate")

CHECK_SAMPLE = 32  # test images also run through the saved model end to end: one batch
# How far the saved model's own features of raw images may be from the cached ones, as the largest
# per-image ||difference|| / ||cached||: engines order their sums differently, and TF32 and bfloat16 keep
# fewer bits; a changed backbone moves them by far more (benchmarks/README.md#figures-behind-choices-in-the-code).
# A near-tie may then flip a top class, and that is no failure.
FEATURE_TOLERANCE = {"float32": 0.01, "mixed": 0.05}
# Up to this size the check runs eagerly: predict() would spend longer tracing the backbone than it saves
# per image (benchmarks/README.md#figures-behind-choices-in-the-code).
EAGER_CHECK_MAX_SIZE = 128


def not_retracing(record: logging.LogRecord) -> bool:
    """Run eagerly, Keras wraps each grouped convolution (ConvNeXt's) in a new tf.function at every call, and
    TensorFlow warns of "retracing" from the fifth on: expected here, and nothing the user could change."""
    return "retracing" not in record.getMessage()


def saved_model_features(model: keras.Model, head_layer: str, images: np.ndarray) -> np.ndarray:
    """What the saved model's backbone makes of raw images: the input of its head."""
    backbone = keras.Model(model.input, model.get_layer(head_layer).input)
    # Run eagerly, Keras on JAX compiles each operation on its own: hundreds of compilations, against one.
    backbone.jit_compile = keras.backend.backend() == "jax"
    if images.shape[1] > EAGER_CHECK_MAX_SIZE or backbone.jit_compile:
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


def check_saved_model(model: keras.Model, record: dict, cached: np.ndarray | None, probabilities: np.ndarray) -> dict:
    """What evaluate records of the check; raises if the saved model's features are off. When the model was
    fine-tuned or trained on images, the measurement already ran the saved model itself, and there is
    nothing independent to compare with: the result says so."""
    if cached is None:
        log.info("saved-model check: none possible, the test split already ran through the saved model")
        return {"compared_with": "nothing: the test split ran through the saved model itself"}
    precision = read_json(paths.FEATURES_INFO)["precision"]
    tolerance = FEATURE_TOLERANCE[precision]
    sample = np.asarray(np.load(paths.images("test"), mmap_mode="r")[:CHECK_SAMPLE])
    own_features = saved_model_features(model, record["head_layer"], sample)
    difference = float(relative_differences(own_features, cached[:len(sample)]).max())
    own_probabilities = model.get_layer(record["head_layer"]).predict(own_features, verbose=0)
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
