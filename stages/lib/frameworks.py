"""Keras, on the backend this process runs, as every command that runs a model imports it: TensorFlow by
default, JAX where KERAS_BACKEND=jax (extract's jax engine sets it; predict and evaluate follow the user's).

Keras imports scikit-learn (for its scikit-learn wrappers), matplotlib's pyplot (for image galleries) and
pandas (to slice DataFrames) whenever they are installed, and TensorFlow imports JAX (for TensorFlow Lite)
and SciPy (for its legacy Keras): seconds more of every stage process
(benchmarks/README.md#figures-behind-choices-in-the-code).
Hidden while Keras is imported, they stay importable afterwards (evaluate draws with matplotlib, the
linear probe fits with scikit-learn, Ray Data runs on pandas); only the Keras and TensorFlow Lite helpers
that need them, which no stage calls, then report their package missing.
"""
import glob
import logging
import os
import sys
import tempfile
from contextlib import contextmanager

BACKEND = os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # Keras reads it once, when first imported
OPTIONAL_EXTRAS = ("matplotlib", "pandas", "sklearn") + (("jax", "scipy") if BACKEND == "tensorflow" else ())
INSTALL = {
    "tensorflow": "pip install tensorflow (tensorflow[and-cuda] on an NVIDIA GPU)",
    "jax": "pip install jax (jax[cuda13] or jax[cuda12] on an NVIDIA GPU)",
}
if BACKEND not in INSTALL:
    raise SystemExit(f"error: KERAS_BACKEND={BACKEND!r} is not a backend this pipeline runs on; "
                     f"unset it (TensorFlow) or set it to one of {sorted(INSTALL)}")


class TensorFlowHidden:
    """Keras on JAX still imports TensorFlow wherever it is installed, to seed it and to look for its tensors
    when it serialises a layer: seconds of start-up and, on a GPU, its memory, for nothing. Hidden, it reads
    as not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError("TensorFlow is hidden from a process that runs Keras on JAX", name=name)


DETERMINISTIC_GPU = "--xla_gpu_deterministic_ops=true"

if BACKEND == "jax":
    sys.meta_path.insert(0, TensorFlowHidden())
    # XLA on a GPU picks the fastest of several reduction orders unless told otherwise: same images, other bytes.
    # Once: a child process inherits it, and a second copy would change XLA_FLAGS, part of JAX's cache key.
    if DETERMINISTIC_GPU not in os.environ.get("XLA_FLAGS", "").split():
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {DETERMINISTIC_GPU}".strip()
    # Building a model on JAX compiles each initialiser and layer on its own, hundreds of small compilations
    # that JAX caches on disk only when asked: a second predict then starts in a third of the time
    # (benchmarks/README.md#figures-behind-choices-in-the-code). KERAS_HOME is set by stages/__init__.py.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.environ["KERAS_HOME"], "jax_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


@contextmanager
def native_stderr_held():
    """Yield a file that receives what is written to the process's stderr meanwhile, C++ included: TensorFlow's
    start-up lines come before any log level applies. Written out after all if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield held
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


@contextmanager
def extras_hidden():
    # A None in sys.modules makes `import sklearn` raise ImportError, which Keras takes as "not installed".
    hidden = [name for name in OPTIONAL_EXTRAS if name not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden, None))
    try:
        yield
    finally:
        for name in hidden:
            del sys.modules[name]


def backend_missing(error: ImportError) -> SystemExit:
    other = "; extract.engine: jax, predict and evaluate also run on JAX (KERAS_BACKEND=jax)" \
        if BACKEND == "tensorflow" else ""
    missing = error.name.split(".")[0]
    return SystemExit(f"error: Keras on {BACKEND} needs {missing}, which is not installed: {INSTALL[BACKEND]}{other}")


# Every start says that oneDNN is on, which CPU instructions it was not built for, and, on a machine with no
# NVIDIA device, that it found no CUDA driver: nothing to act on. With an NVIDIA device and no GPU found, the
# same lines say why, and are shown.
with native_stderr_held() as start_up, extras_hidden():
    try:
        import keras
        if BACKEND == "tensorflow":
            import tensorflow as tf
            gpus_found = tf.config.list_physical_devices("GPU")  # CUDA is probed once, here
    except ImportError as error:
        if (error.name or "").split(".")[0] not in ("tensorflow", "jax", "jaxlib"):
            raise
        raise backend_missing(error) from None
    start_up.seek(0)
    start_up_lines = start_up.read()
if BACKEND == "tensorflow" and glob.glob("/dev/nvidia[0-9]*") and not gpus_found:
    os.write(2, start_up_lines)
if BACKEND == "jax":
    # Said at every start on a machine without a TPU: nothing to act on.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
if BACKEND == "tensorflow":
    # Imported before the commands configure logging, TensorFlow gives its logger a handler of its own; with
    # the commands' handler on the root logger, every TensorFlow warning would then be printed twice.
    logging.getLogger("tensorflow").handlers.clear()


def __getattr__(name: str):
    # `from stages.lib.frameworks import tf` in a module that needs TensorFlow, in a process on JAX.
    if name == "tf":
        raise SystemExit("error: this command needs Keras on TensorFlow, but KERAS_BACKEND is jax; unset it, "
                         "or use a command that runs on JAX (extract with extract.engine: jax, predict, evaluate)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BACKEND", "keras", "tf"]
