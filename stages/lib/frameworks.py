"""TensorFlow and Keras, as every stage that runs a model imports them: without the extras Keras loads for
features no stage uses.

Keras imports scikit-learn (for its scikit-learn wrappers) and matplotlib's pyplot (for image galleries)
whenever they are installed, and scikit-learn imports much of SciPy: two seconds more of every stage
process (benchmarks/README.md#figures-behind-choices-in-the-code).
Hidden while Keras is imported, they stay importable afterwards (evaluate draws with matplotlib, the
linear probe fits with scikit-learn); only Keras's scikit-learn wrappers and plotting helpers, which no
stage calls, then report their package missing.
"""
import glob
import logging
import os
import sys
import tempfile
from contextlib import contextmanager

OPTIONAL_EXTRAS = ("matplotlib", "sklearn")


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


# Every start says that oneDNN is on, which CPU instructions it was not built for, and, on a machine with no
# NVIDIA device, that it found no CUDA driver: nothing to act on. With an NVIDIA device and no GPU found, the
# same lines say why, and are shown.
with native_stderr_held() as start_up:
    # A None in sys.modules makes `import sklearn` raise ImportError, which Keras takes as "not installed".
    _hidden = [name for name in OPTIONAL_EXTRAS if name not in sys.modules]
    sys.modules.update(dict.fromkeys(_hidden, None))
    try:
        import keras
        import tensorflow as tf
    finally:
        for name in _hidden:
            del sys.modules[name]
    gpus_found = tf.config.list_physical_devices("GPU")  # CUDA is probed once, here
    start_up.seek(0)
    start_up_lines = start_up.read()
if glob.glob("/dev/nvidia[0-9]*") and not gpus_found:
    os.write(2, start_up_lines)

# Imported before the commands configure logging, TensorFlow gives its logger a handler of its own; with the
# commands' handler on the root logger, every TensorFlow warning would then be printed twice.
logging.getLogger("tensorflow").handlers.clear()

__all__ = ["keras", "tf"]
