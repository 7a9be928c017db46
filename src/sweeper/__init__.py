"""sweeper: hyperparameter sweeps with experiment tracking for Keras image classifiers."""

__version__ = "0.1.0"
