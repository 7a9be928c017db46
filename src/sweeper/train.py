"""One trial: build, compile, fit, evaluate. Reads top to bottom; tracking comes in as callbacks."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np

from sweeper import families
from sweeper.data import Dataset
from sweeper.errors import SweeperError, TrialFailed

# Parameters of training shared by every family; a family adds its own (`family.DEFAULTS`).
TRAIN_DEFAULTS = {
    "batch_size": 128,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "lr_schedule": "constant",  # or "exponential": ExponentialDecay(lr, decay_steps, decay_rate)
    "decay_steps": 1000,
    "decay_rate": 0.9,
    "momentum": 0.9,  # for sgd and rmsprop
    "loss": "crossentropy",  # or "mse" on one-hot targets (baseline B6)
    "early_stopping_patience": 3,  # 0 turns early stopping off
    "early_stopping_monitor": "val_loss",
}
OPTIMIZERS = {
    "adam": lambda lr, p: keras.optimizers.Adam(lr),
    "adamax": lambda lr, p: keras.optimizers.Adamax(lr),
    "nadam": lambda lr, p: keras.optimizers.Nadam(lr),
    "rmsprop": lambda lr, p: keras.optimizers.RMSprop(lr, momentum=p["momentum"]),
    "sgd": lambda lr, p: keras.optimizers.SGD(lr, momentum=p["momentum"]),
}


def set_threads(n: int) -> None:
    """Caps TensorFlow's CPU threads for this process; call before the first operation."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(min(n, 2))


def defaults(family: str) -> dict:
    """Every parameter a trial of `family` reads, with its default."""
    return {**TRAIN_DEFAULTS, **families.get(family).DEFAULTS}


@dataclass
class TrialResult:
    model: keras.Model
    history: dict[str, list[float]]
    test: dict[str, float]
    test_probabilities: np.ndarray
    train_seconds: float
    images_per_second: float
    pruned: bool = False

    @property
    def epochs(self) -> int:
        return len(self.history.get("loss", []))

    def best(self, metric: str, direction: str = "maximize") -> float:
        values = [v for v in self.history.get(metric, []) if not math.isnan(v)]
        if not values:
            return float("nan")
        return max(values) if direction == "maximize" else min(values)


class StopWhen(keras.callbacks.Callback):
    """Ends training after an epoch whose logs satisfy `predicate` (a NaN loss, the sweep's
    deadline, its target). Per epoch on purpose: a batch hook, as in `TerminateOnNaN`,
    makes Keras wait for every batch's logs (~40% slower here on the CPU)."""

    def __init__(self, predicate):
        super().__init__()
        self.predicate = predicate

    def on_epoch_end(self, epoch, logs=None):
        if self.predicate(logs or {}):
            self.model.stop_training = True


class Pruned(keras.callbacks.Callback):
    """Stops fit when `should_prune(epoch, logs)` says so, and remembers that it did."""

    def __init__(self, should_prune):
        super().__init__()
        self.should_prune = should_prune
        self.pruned = False

    def on_epoch_end(self, epoch, logs=None):
        if self.should_prune(epoch, logs or {}):
            self.pruned = True
            self.model.stop_training = True


def train(
    family: str,
    params: dict,
    dataset: Dataset,
    *,
    epochs: int,
    seed: int,
    callbacks=(),
    should_prune=None,
    precision: str = "float32",
    stop_when=None,
    verbose: int = 0,
) -> TrialResult:
    """Trains one model; raises `TrialFailed` if the loss becomes NaN.

    `should_prune(epoch, logs)` stops a losing trial (marked pruned); `stop_when(logs)` stops
    one that is done early (deadline, target reached). `precision` is a Keras dtype policy:
    "float32", or "mixed_bfloat16" on CPUs with bf16.
    """
    p = {**defaults(family), **params}
    keras.backend.clear_session(free_memory=True)  # memory must not grow across trials
    keras.utils.set_random_seed(seed)  # Python, NumPy and TF at once
    keras.mixed_precision.set_global_policy(precision)

    module = families.get(family)
    model = module.build(p, dataset.input_shape, dataset.n_classes)
    model.compile(optimizer=make_optimizer(p, p["learning_rate"]), loss=_loss(p),
                  metrics=["accuracy"])
    pruner = Pruned(should_prune) if should_prune else None
    fit_callbacks = [*_standard_callbacks(p), *callbacks, *([pruner] if pruner else []),
                     *([StopWhen(stop_when)] if stop_when else [])]
    y_train, y_val = _targets(p, dataset.y_train, dataset.n_classes), _targets(
        p, dataset.y_val, dataset.n_classes)

    start = time.perf_counter()
    fit = model.fit(dataset.x_train, y_train, validation_data=(dataset.x_val, y_val),
                    epochs=epochs, batch_size=p["batch_size"], callbacks=fit_callbacks,
                    verbose=verbose)
    history = {k: list(map(float, v)) for k, v in fit.history.items()}
    pruned = bool(pruner and pruner.pruned)
    if _fine_tunes(module, p) and not pruned:
        history = _fine_tune(model, module, p, dataset, y_train, y_val, fit_callbacks,
                             history, verbose)
    train_seconds = time.perf_counter() - start
    if any(math.isnan(v) or math.isinf(v) for v in history.get("loss", [])):
        raise TrialFailed(f"loss became NaN at epoch {len(history['loss'])}")

    probs = model.predict(dataset.x_test, batch_size=512, verbose=0)
    images = len(dataset.y_train) * len(history.get("loss", []))
    return TrialResult(model, history, evaluate(probs, dataset.y_test, p["loss"]), probs,
                       train_seconds, images / max(train_seconds, 1e-9), pruned)


def make_optimizer(p: dict, learning_rate: float) -> keras.optimizers.Optimizer:
    if p["optimizer"] not in OPTIMIZERS:
        raise SweeperError(f"Unknown optimizer {p['optimizer']!r}. Known: "
                           f"{', '.join(OPTIMIZERS)}")
    if p["lr_schedule"] == "exponential":
        learning_rate = keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=p["decay_steps"], decay_rate=p["decay_rate"])
    elif p["lr_schedule"] != "constant":
        raise SweeperError(f"Unknown lr_schedule {p['lr_schedule']!r}. Known: constant, "
                           "exponential")
    return OPTIMIZERS[p["optimizer"]](learning_rate, p)


def evaluate(probs: np.ndarray, y_true: np.ndarray, loss: str = "crossentropy") -> dict:
    """Test metrics from predicted probabilities: accuracy, loss, macro P/R/F1, ROC AUC."""
    n_classes = probs.shape[1]
    if loss == "mse":
        test_loss = float(np.mean((probs - np.eye(n_classes)[y_true]) ** 2))
    else:
        picked = probs[np.arange(len(y_true)), y_true]
        test_loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    matrix = confusion_matrix(y_true, probs.argmax(axis=1), n_classes)
    hits = np.diag(matrix).astype(float)
    # A class never predicted (or absent) scores 0, as scikit-learn's zero_division=0 does.
    precision = np.divide(hits, matrix.sum(0), out=np.zeros(n_classes), where=matrix.sum(0) > 0)
    recall = np.divide(hits, matrix.sum(1), out=np.zeros(n_classes), where=matrix.sum(1) > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(n_classes), where=both > 0)
    return {
        "test_accuracy": float(hits.sum() / len(y_true)),
        "test_loss": test_loss,
        "test_precision": float(precision.mean()),
        "test_recall": float(recall.mean()),
        "test_f1": float(f1.mean()),
        "test_roc_auc": _roc_auc(y_true, probs),
    }


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows the true class and columns the predicted one."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes ** 2).reshape(
        n_classes, n_classes)


def _roc_auc(y_true, probs):
    """Macro one-vs-rest ROC AUC, exact, as the Mann-Whitney statistic on average ranks
    (ties share theirs). NaN when the test set lacks a class: AUC is undefined then."""
    n_classes = probs.shape[1]
    if len(np.unique(y_true)) < n_classes:
        return float("nan")
    aucs = []
    for c in ([1] if n_classes == 2 else range(n_classes)):  # binary: the positive class
        _, inverse, counts = np.unique(probs[:, c], return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        ranks = ((ends - counts + 1 + ends) / 2)[inverse]
        positive = y_true == c
        n_pos, n_neg = positive.sum(), (~positive).sum()
        aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs))


def _loss(p):
    if p["loss"] == "mse":
        return "mean_squared_error"
    if p["loss"] == "crossentropy":
        return "sparse_categorical_crossentropy"
    raise SweeperError(f"Unknown loss {p['loss']!r}. Known: crossentropy, mse")


def _targets(p, y, n_classes):
    return np.eye(n_classes, dtype="float32")[y] if p["loss"] == "mse" else y


def _loss_not_finite(logs) -> bool:
    loss = logs.get("loss")
    return loss is not None and not math.isfinite(loss)


def _standard_callbacks(p):
    callbacks = [StopWhen(_loss_not_finite)]
    if p["early_stopping_patience"]:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=p["early_stopping_monitor"], patience=p["early_stopping_patience"],
            restore_best_weights=True))
    return callbacks


def _fine_tunes(module, p):
    return hasattr(module, "fine_tune") and p.get("fine_tune_epochs", 0) > 0


def _fine_tune(model, module, p, dataset, y_train, y_val, callbacks, history, verbose):
    """Second phase (transfer learning): unfreeze the backbone's top, train slowly."""
    module.fine_tune(model, p)
    model.compile(optimizer=make_optimizer({**p, "lr_schedule": "constant"},
                                           p["fine_tune_learning_rate"]),
                  loss=_loss(p), metrics=["accuracy"])
    done = len(history["loss"])
    more = model.fit(dataset.x_train, y_train, validation_data=(dataset.x_val, y_val),
                     initial_epoch=done, epochs=done + p["fine_tune_epochs"],
                     batch_size=p["batch_size"], callbacks=callbacks, verbose=verbose)
    return {k: v + list(map(float, more.history.get(k, []))) for k, v in history.items()}
