"""Training batches: the same images in the same order on every path, device count and rerun."""
import math

import numpy as np

from stages.lib import paths
from stages.lib.cache import load_features
from stages.lib.frameworks import keras, tf


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
    """A split's cached features (checked finite), or its memory-mapped images, with its labels."""
    inputs = load_features(split) if use_features else np.load(paths.images(split), mmap_mode="r")
    return Batches(inputs, np.load(paths.labels(split)), batch_size, seed)
