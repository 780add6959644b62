"""The jax engine: the frozen extractor as one function compiled by XLA, run by Keras's JAX backend."""
import jax
import numpy as np

from stages.lib.frameworks import keras


def compile_jax(extractor: keras.Model, precision: str):
    # On a GPU, JAX runs float32 convolutions and matrix products in TF32 unless told otherwise: features
    # further from the CPU's than evaluate's float32 tolerance. Mixed precision asks for bfloat16 itself.
    if precision == "float32":
        jax.config.update("jax_default_matmul_precision", "highest")
    # The weights go in as arguments, not as constants of the compiled function: XLA would fold them.
    trainable = [variable.value for variable in extractor.trainable_variables]
    non_trainable = [variable.value for variable in extractor.non_trainable_variables]

    @jax.jit
    def features(trainable, non_trainable, batch):
        computed, _ = extractor.stateless_call(trainable, non_trainable, batch, training=False)
        return computed.astype("float32")

    return lambda batch: np.asarray(features(trainable, non_trainable, batch))
