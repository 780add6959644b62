"""TensorFlow and Keras, as every stage that runs a model imports them: without the extras Keras loads for
features no stage uses.

Keras imports scikit-learn (for its scikit-learn wrappers) and matplotlib's pyplot (for image galleries)
whenever they are installed, and scikit-learn imports much of SciPy: two seconds more of every stage
process (benchmarks/README.md#figures-behind-choices-in-the-code).
Hidden while Keras is imported, they stay importable afterwards (evaluate draws with matplotlib, the
linear probe fits with scikit-learn); only Keras's scikit-learn wrappers and plotting helpers, which no
stage calls, then report their package missing.
"""
import logging
import sys

OPTIONAL_EXTRAS = ("matplotlib", "sklearn")

# A None in sys.modules makes `import sklearn` raise ImportError, which Keras takes as "not installed".
_hidden = [name for name in OPTIONAL_EXTRAS if name not in sys.modules]
sys.modules.update(dict.fromkeys(_hidden, None))
try:
    import keras
    import tensorflow as tf
finally:
    for name in _hidden:
        del sys.modules[name]

# Imported before the commands configure logging, TensorFlow gives its logger a handler of its own; with the
# commands' handler on the root logger, every TensorFlow warning would then be printed twice.
logging.getLogger("tensorflow").handlers.clear()

__all__ = ["keras", "tf"]
