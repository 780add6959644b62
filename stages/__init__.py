"""The pipeline's stages (prepare, extract, train, evaluate) and the modules they share."""
import os

# TensorFlow's start-up chatter (CUDA probing, CPU features) would bury the stages' own logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
