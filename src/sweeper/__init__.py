"""sweeper: hyperparameter sweeps with experiment tracking for Keras image classifiers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter, before it loads

__version__ = "0.1.0"
