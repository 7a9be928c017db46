"""One trial: build, compile, fit, evaluate. Reads top to bottom; tracking comes in as callbacks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from sweeper import families, schema
from sweeper.data import Dataset
from sweeper.metrics import evaluate

# Every optimizer takes Keras' decoupled `weight_decay` (0: none); AdamW is Adam with it.
OPTIMIZERS = {
    "adam": lambda lr, p: keras.optimizers.Adam(lr, weight_decay=p["weight_decay"] or None),
    "adamw": lambda lr, p: keras.optimizers.AdamW(lr, weight_decay=p["weight_decay"]),
    "adamax": lambda lr, p: keras.optimizers.Adamax(lr, weight_decay=p["weight_decay"] or None),
    "nadam": lambda lr, p: keras.optimizers.Nadam(lr, weight_decay=p["weight_decay"] or None),
    "rmsprop": lambda lr, p: keras.optimizers.RMSprop(
        lr, momentum=p["momentum"], weight_decay=p["weight_decay"] or None
    ),
    "sgd": lambda lr, p: keras.optimizers.SGD(
        lr, momentum=p["momentum"], nesterov=p["nesterov"], weight_decay=p["weight_decay"] or None
    ),
}


@dataclass
class TrialResult:
    model: keras.Model
    history: dict[str, list[float]]
    test: dict[str, float]
    test_probabilities: np.ndarray
    train_seconds: float
    images_per_second: float
    pruned: bool = False
    stopped_by: str | None = None  # why it stopped before its epochs: "timeout", "target"

    @property
    def epochs(self) -> int:
        return len(self.history.get("loss", []))

    def best(self, metric: str, direction: str = "maximize") -> float:
        values = [v for v in self.history.get(metric, []) if not math.isnan(v)]
        if not values:
            return float("nan")
        return max(values) if direction == "maximize" else min(values)


class StopWhen(keras.callbacks.Callback):
    """Ends training after an epoch for which `reason(logs)` gives a reason (the sweep's
    deadline, its target), and keeps it. Per epoch on purpose: a batch hook, as in
    `TerminateOnNaN`, makes Keras wait for every batch's logs (~40% slower here on the CPU)."""

    def __init__(self, reason: Callable[[dict], str | None]):
        super().__init__()
        self.reason = reason
        self.stopped_by: str | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if why := self.reason(logs or {}):
            self.stopped_by = why
            self.model.stop_training = True


class Pruned(keras.callbacks.Callback):
    """Stops fit when `should_prune(epoch, logs)` says so, and remembers that it did."""

    def __init__(self, should_prune: Callable[[int, dict], bool]):
        super().__init__()
        self.should_prune = should_prune
        self.pruned = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
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
    callbacks: Sequence[keras.callbacks.Callback] = (),
    should_prune: Callable[[int, dict], bool] | None = None,
    precision: str = "float32",
    stop_when: Callable[[dict], str | None] | None = None,
    verbose: int = 0,
) -> TrialResult:
    """Trains one model and scores it on the test set.

    `should_prune(epoch, logs)` stops a losing trial (marked pruned); `stop_when(logs)` stops
    one that is done early, giving why (deadline, target reached). A trial whose loss
    diverges (NaN) stops there and counts as pruned, stopped by "diverged": samplers learn
    from it and it is no failure. `precision` is a Keras dtype policy: "float32", or
    "mixed_bfloat16" on CPUs with bf16.
    """
    p = schema.resolve(family, params)
    keras.backend.clear_session(free_memory=True)  # memory must not grow across trials
    keras.utils.set_random_seed(seed)  # Python, NumPy and TF at once
    keras.mixed_precision.set_global_policy(precision)

    module = families.get(family)
    model = module.build(p, dataset.input_shape, dataset.n_classes)
    steps = epochs * math.ceil(len(dataset.y_train) / p["batch_size"])
    model.compile(
        optimizer=make_optimizer(p, p["learning_rate"], steps), loss=_loss(p), metrics=["accuracy"]
    )
    pruner = Pruned(should_prune) if should_prune else None
    fit_callbacks = [
        *_standard_callbacks(p),
        *callbacks,
        *([pruner] if pruner else []),
    ]
    stopper = StopWhen(stop_when) if stop_when else None
    fit_callbacks += [stopper] if stopper else []
    y_train, y_val = (
        _targets(p, dataset.y_train, dataset.n_classes),
        _targets(p, dataset.y_val, dataset.n_classes),
    )

    start = time.perf_counter()
    fit = model.fit(
        dataset.x_train,
        y_train,
        validation_data=(dataset.x_val, y_val) if len(y_val) else None,
        epochs=epochs,
        batch_size=p["batch_size"],
        callbacks=fit_callbacks,
        verbose=verbose,
    )
    history = {k: list(map(float, v)) for k, v in fit.history.items()}
    pruned = bool(pruner and pruner.pruned)
    if _fine_tunes(module, p) and not pruned:
        history = _fine_tune(
            model, module, p, dataset, y_train, y_val, fit_callbacks, history, verbose
        )
    train_seconds = time.perf_counter() - start
    diverged = any(not math.isfinite(v) for v in history.get("loss", []))
    stopped_by = "diverged" if diverged else stopper.stopped_by if stopper else None

    # A diverged model's outputs are NaN: scored as the nothing it predicts.
    probs = np.nan_to_num(model.predict(dataset.x_test, batch_size=512, verbose=0))
    test = evaluate(probs, dataset.y_test, p["loss"])
    if p["tta"] == "flip":  # scored beside test_accuracy; selection never reads it
        mirrored = model.predict(dataset.x_test[:, :, ::-1], batch_size=512, verbose=0)
        both = (probs + mirrored) / 2
        test["test_accuracy_tta"] = float(np.mean(both.argmax(1) == dataset.y_test))
    images = len(dataset.y_train) * len(history.get("loss", []))
    return TrialResult(
        model,
        history,
        test,
        probs,
        train_seconds,
        images / max(train_seconds, 1e-9),
        pruned or diverged,
        stopped_by,
    )


def make_optimizer(p: dict, learning_rate: float, steps: int) -> keras.optimizers.Optimizer:
    """The optimizer `p` names on its learning-rate schedule; `steps` is the trial's whole
    run, so a cosine schedule ends where the trial does (`p` is checked already)."""
    if p["lr_schedule"] == "exponential":
        learning_rate = keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=p["decay_steps"], decay_rate=p["decay_rate"]
        )
    elif p["lr_schedule"] == "cosine":
        warmup = int(steps * p["warmup_fraction"])
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else learning_rate,
            decay_steps=max(1, steps - warmup),
            alpha=p["final_lr_fraction"],
            warmup_target=learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    return OPTIMIZERS[p["optimizer"]](learning_rate, p)


def _loss(p):
    if p["loss"] == "mse":
        return "mean_squared_error"
    if p["label_smoothing"]:  # Keras' sparse loss has no smoothing: one-hot targets instead
        return keras.losses.CategoricalCrossentropy(label_smoothing=p["label_smoothing"])
    return "sparse_categorical_crossentropy"


def _targets(p, y, n_classes):
    one_hot = p["loss"] == "mse" or p["label_smoothing"]
    return np.eye(n_classes, dtype="float32")[y] if one_hot else y


def _diverged(logs) -> str | None:
    loss = logs.get("loss")
    return "diverged" if loss is not None and not math.isfinite(loss) else None


def _standard_callbacks(p):
    callbacks = [StopWhen(_diverged)]
    if p["early_stopping_patience"]:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=p["early_stopping_monitor"],
                patience=p["early_stopping_patience"],
                restore_best_weights=True,
            )
        )
    return callbacks


def _fine_tunes(module, p):
    return hasattr(module, "fine_tune") and p.get("fine_tune_epochs", 0) > 0


def _fine_tune(model, module, p, dataset, y_train, y_val, callbacks, history, verbose):
    """Second phase (transfer learning): unfreeze the backbone's top, train slowly."""
    module.fine_tune(model, p)
    model.compile(
        optimizer=make_optimizer(
            {**p, "lr_schedule": "constant"}, p["fine_tune_learning_rate"], steps=1
        ),
        loss=_loss(p),
        metrics=["accuracy"],
    )
    done = len(history["loss"])
    more = model.fit(
        dataset.x_train,
        y_train,
        validation_data=(dataset.x_val, y_val) if len(y_val) else None,
        initial_epoch=done,
        epochs=done + p["fine_tune_epochs"],
        batch_size=p["batch_size"],
        callbacks=callbacks,
        verbose=verbose,
    )
    return {k: v + list(map(float, more.history.get(k, []))) for k, v in history.items()}
