"""How training runs: on one device or every GPU of this host, and reproducibly on each."""
import json
import os

from stages.lib.frameworks import keras, tf
# Not public, and the only way to turn determinism off; imported after stages.lib.frameworks has imported TensorFlow.
from tensorflow.python.framework import config as framework_config

# Keras 3's fit() and evaluate() fail under MultiWorkerMirroredStrategy (keras-team/keras#20585):
# refuse early rather than let every worker train alone and write the same outputs.
MULTI_WORKER_UNSUPPORTED = (
    "train: TF_CONFIG describes {workers} workers, but Keras {keras} cannot train under "
    "MultiWorkerMirroredStrategy (keras-team/keras#20585); unset TF_CONFIG and train on one host "
    "(spread extraction over hosts with Ray: set RAY_ADDRESS)"
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


def make_reproducible(head_alone: bool) -> bool:
    """Same params, same bytes: returns whether training may use XLA, and sets op determinism either way.

    XLA fuses the head's tiny steps (about twice as fast on a CPU) and on a CPU computes the same bytes
    run after run. Keras refuses XLA under TensorFlow's op determinism, which everything else needs:
    a GPU's reductions, and the backbone's layers when training on images. (XLA also fails under
    MirroredStrategy in Keras 3.15.) Determinism is process-wide, so it is set off as well as on.
    """
    one_cpu = not tf.config.list_physical_devices("GPU") and tf.distribute.get_strategy().num_replicas_in_sync == 1
    xla = head_alone and one_cpu
    if xla:
        framework_config.disable_op_determinism()
    else:
        framework_config.enable_op_determinism()
    return xla
