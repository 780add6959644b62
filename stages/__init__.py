"""The commands: the DVC stages (prepare, extract, train, evaluate) and predict, export and compare, each run
as `python -m stages.<name>`. What they are built from lives in stages/lib/."""
import os

# TensorFlow's start-up chatter (CUDA probing, CPU features) would bury the stages' own logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Keras keeps keras.json and downloaded ImageNet weights in its home folder. Unset, it picks ~/.keras, or
# the system's temporary folder where the home folder is read-only: name the usual place, so nothing is
# written where the user did not say (set KERAS_HOME to choose another).
os.environ.setdefault("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
