"""Which tf.distribute strategy trains the head: one device, or every GPU of this host."""
import json
import os

import keras
import tensorflow as tf

# Keras 3's fit() and evaluate() fail under MultiWorkerMirroredStrategy (keras-team/keras#20585):
# refuse early rather than let every worker train alone and write the same outputs.
MULTI_WORKER_UNSUPPORTED = (
    "train: TF_CONFIG describes {workers} workers, but Keras {keras} cannot train under "
    "MultiWorkerMirroredStrategy (keras-team/keras#20585); unset TF_CONFIG and train on one host "
    "(spread extraction over hosts with `python -m stages.extract --shard I/N`)"
)


def cluster_workers(tf_config: str | None) -> int:
    """How many workers a TF_CONFIG names; 0 when it is unset or empty."""
    if not tf_config:
        return 0
    try:
        cluster = json.loads(tf_config).get("cluster", {})
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"TF_CONFIG is not a JSON object ({error}); fix or unset it") from error
    return sum(len(cluster.get(role, [])) for role in ("chief", "worker"))


def choose_strategy(gpus: list[str] | None = None, tf_config: str | None = None) -> tf.distribute.Strategy:
    """MirroredStrategy over several GPUs, otherwise the default one-device strategy.

    Batch sizes stay global: MirroredStrategy splits each batch across the devices, so every
    device count sees the same batches in the same order.
    """
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")] if gpus is None else gpus
    tf_config = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    if (workers := cluster_workers(tf_config)) > 1:
        raise ValueError(MULTI_WORKER_UNSUPPORTED.format(workers=workers, keras=keras.__version__))
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(gpus)
    return tf.distribute.get_strategy()
