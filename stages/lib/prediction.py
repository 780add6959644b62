"""Classifying image files with a saved classifier: the top classes of each, in batches, with an error in
place of the classes for a file that cannot be read."""
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stages.lib.classifier import predict_padded
from stages.lib.frameworks import keras
from stages.lib.images import read_image

BATCH_SIZE = 32  # images per call of the model


def host_resize(model: keras.Model):
    """The model's own resize layer, to run on each image before batching, when the model has one (the
    pipeline's do): every image then has the same shape, and the model's resize of it changes nothing."""
    try:
        resize = keras.layers.Resizing.from_config(model.get_layer("resize").get_config())
    except ValueError:
        return lambda pixels: pixels  # a model without it: images of the same size still batch together
    return lambda pixels: keras.ops.convert_to_numpy(resize(pixels[None].astype(np.float32)))[0]


def ranked(classes: list[str], probabilities: np.ndarray, top_k: int) -> list[dict]:
    best = np.argsort(-probabilities)[:top_k]
    return [{"class": classes[i], "probability": float(probabilities[i])} for i in best]


def predict(model: keras.Model, classes: list[str], images: list[Path], top_k: int,
            batch_size: int = BATCH_SIZE) -> list[dict]:
    """A result per image, in the order given; an image that cannot be read gets an error in place of
    classes, and the rest go on."""
    results: list[dict] = [{"image": str(path)} for path in images]
    waiting: dict[tuple, list[tuple[int, np.ndarray]]] = {}  # per image shape: (index, pixels)
    resize = host_resize(model)
    batch_size = min(batch_size, len(images))

    def classify(batch: list[tuple[int, np.ndarray]]) -> None:
        probabilities = predict_padded(model, np.stack([pixels for _, pixels in batch]), batch_size)
        for (index, _), row in zip(batch, probabilities):
            results[index]["top"] = ranked(classes, row, top_k)

    for index, path in enumerate(tqdm(images, desc="predict", unit="img", disable=None)):
        try:
            pixels = resize(read_image(path))
        except ValueError as error:
            results[index]["error"] = str(error)
            continue
        waiting.setdefault(pixels.shape, []).append((index, pixels))
        if sum(map(len, waiting.values())) == batch_size:  # at most a batch of images in memory
            for batch in waiting.values():
                classify(batch)
            waiting.clear()
    for batch in waiting.values():
        classify(batch)
    return results
