"""One trial: build, compile, fit, evaluate. Reads top to bottom; tracking comes in as callbacks."""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from sweeper import families, policy, schema
from sweeper.data import Dataset
from sweeper.families._layers import ALTERNATING
from sweeper.image_cache import DiskImages, Images
from sweeper.metrics import evaluate

# Every optimizer takes Keras' decoupled `weight_decay` (0: none) and weight averaging
# (`use_ema`); AdamW is Adam with the decay.
# Why a trial stops pruned rather than complete: its loss went NaN, or it learned nothing in
# its first epoch (`policy.at_chance`'s reason).
PRUNING_STOPS = ("diverged", policy.AT_CHANCE)
# `latency_ms`: single-image predictions timed after a warm-up; their median is logged.
LATENCY_WARMUP, LATENCY_CALLS = 10, 50
# Every fit, validation and prediction reads its images through sweeper's own tf.data
# pipelines, two batches ahead (a batch of 128 rows reads from disk in ~1 ms at 32 px), with
# tf.data's autotuning off. Keras' array adapter autotunes and makes an iterator each epoch;
# dropping one waited out its tuning thread's sleep (up to 60 s) at the start of every epoch
# after a fit's first: 35-56 s idle on 45-88 s epochs here (docs/measurements.md, "Why
# later epochs took longer").
BATCHES_IN_FLIGHT = 2
_NOT_AUTOTUNED = tf.data.Options()
_NOT_AUTOTUNED.autotune.enabled = False
# `seconds_per_image`: training steps timed after the one that traces, on at most this batch.
SPEED_STEPS, SPEED_BATCH = 3, 16
OPTIMIZERS = {
    "adam": lambda lr, p, kw: keras.optimizers.Adam(lr, **kw),
    "adamw": lambda lr, p, kw: keras.optimizers.AdamW(lr, **kw),
    "adamax": lambda lr, p, kw: keras.optimizers.Adamax(lr, **kw),
    "nadam": lambda lr, p, kw: keras.optimizers.Nadam(lr, **kw),
    "rmsprop": lambda lr, p, kw: keras.optimizers.RMSprop(lr, momentum=p["momentum"], **kw),
    "sgd": lambda lr, p, kw: keras.optimizers.SGD(
        lr, momentum=p["momentum"], nesterov=p["nesterov"], **kw
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
    model_epoch: int = 0  # the epoch (from 1) whose weights the model holds; 0: the last
    val_seconds: list[float] = field(default_factory=list)  # each epoch's validation's
    costs: dict[str, float] = field(default_factory=dict)  # `costs`: size and latency
    replanned: int | None = None  # the epochs a `Deadline` changed its plan to

    @property
    def epochs(self) -> int:
        return len(self.history.get("loss", []))

    def score(self, metric: str) -> float:
        """`metric` at the epoch the model is from: the value that its saved weights earned
        (early stopping restores the best epoch of what it watches; else the last)."""
        values = self.history.get(metric, [])
        epoch = self.model_epoch or len(values)
        value = values[epoch - 1] if 0 < epoch <= len(values) else float("nan")
        return value if math.isfinite(value) else float("nan")


class StopWhen(keras.callbacks.Callback):
    """Ends training after an epoch for which `reason(epoch, logs)` gives a reason (the
    sweep's deadline, its target, a trial at chance), and keeps it. Per epoch on purpose: a
    batch hook, as in `TerminateOnNaN`, makes Keras wait for every batch's logs (~40% slower
    here on the CPU)."""

    def __init__(self, reason: Callable[[int, dict], str | None]):
        super().__init__()
        self.reason = reason
        self.stopped_by: str | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if why := self.reason(epoch, logs or {}):
            self.stopped_by = why
            self.model.stop_training = True


class EpochClock(keras.callbacks.Callback):
    """The seconds of each epoch, and of each epoch's validation (from its start to the
    epoch's end). How an epoch splits between training and predicting differs by machine
    (fashion_mnist's ResNet in bf16 on AMX: 2.1 s for 7,500 predictions, ~0.28 ms each
    against ~1.5-2 ms a trained image, not the third assumed before), and plans made from a
    trial's speed (`policy.refit_plan`) need the training part alone."""

    def __init__(self):
        super().__init__()
        self.epoch_seconds: list[float] = []
        self.val_seconds: list[float] = []
        self._started = 0.0
        self._validating: float | None = None  # when this epoch's validation began

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._validating = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        ended = time.perf_counter()
        self.epoch_seconds.append(ended - self._started)
        if self._validating is not None:
            self.val_seconds.append(ended - self._validating)
        self._validating = None


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
    stop_when: Callable[[int, dict], str | None] | None = None,
    epochs_that_fit: Callable[[list[float]], int] | None = None,
    most_epochs: int = 0,
    verbose: int = 0,
) -> TrialResult:
    """Trains one model and scores it on the test set.

    `should_prune(epoch, logs)` stops a losing trial (marked pruned); `stop_when(epoch,
    logs)` stops one early, giving why: done ("timeout", "target") or, for a reason in
    `PRUNING_STOPS`, pruned. A trial whose loss diverges (NaN) stops there and counts as
    pruned, stopped by "diverged": samplers learn from it and it is no failure.
    `precision` is a Keras dtype policy: "float32", or "mixed_bfloat16" on CPUs with bf16.
    """
    p = schema.resolve(family, params)
    keras.backend.clear_session(free_memory=True)  # memory must not grow across trials
    keras.utils.set_random_seed(seed)  # Python, NumPy and TF at once
    keras.mixed_precision.set_global_policy(precision)

    module = families.get(family)
    model = module.build(p, dataset.input_shape, dataset.n_classes)
    if hasattr(module, "adapt"):  # layers computed from the training images (a whitening)
        module.adapt(model, dataset.x_train)
    steps_per_epoch = math.ceil(len(dataset.y_train) / p["batch_size"])
    steps = epochs * steps_per_epoch
    learning_rate = schedule(p, p["learning_rate"], steps)
    clock = EpochClock()  # first of the callbacks: the others read this epoch's seconds
    deadline = None
    if epochs_that_fit:
        if p["lr_schedule"] == "cosine":  # only a cosine is planned over the run's length
            learning_rate = Resizable(learning_rate, steps)
        resizable = learning_rate if isinstance(learning_rate, Resizable) else None
        deadline = Deadline(epochs_that_fit, epochs, most_epochs, steps_per_epoch, resizable, clock)
    fit_epochs = deadline.most if deadline else epochs
    model.compile(
        optimizer=make_optimizer(p, learning_rate, steps), loss=_loss(p), metrics=["accuracy"]
    )
    pruner = Pruned(should_prune) if should_prune else None
    fit_callbacks = [
        clock,
        *_standard_callbacks(p),
        *callbacks,
        *([pruner] if pruner else []),
        *([deadline] if deadline else []),
    ]
    stopper = StopWhen(stop_when) if stop_when else None
    fit_callbacks += [stopper] if stopper else []
    y_train, y_val = (
        _targets(p, dataset.y_train, dataset.n_classes),
        _targets(p, dataset.y_val, dataset.n_classes),
    )

    start = time.perf_counter()
    fit = model.fit(
        **_inputs(p, dataset.x_train, y_train, fit_epochs, seed),
        validation_data=_validation(dataset.x_val, y_val, p["batch_size"]),
        epochs=fit_epochs,
        callbacks=fit_callbacks,
        verbose=verbose,
    )
    history = {k: list(map(float, v)) for k, v in fit.history.items()}
    pruned = bool(pruner and pruner.pruned)
    if _fine_tunes(module, p) and not pruned:
        history = _fine_tune(
            model,
            module,
            p,
            dataset,
            y_train,
            y_val,
            [c for c in fit_callbacks if c is not deadline],  # it planned the first phase
            history,
            verbose,
            seed,
        )
    train_seconds = time.perf_counter() - start
    restored = next(
        (
            c
            for c in fit_callbacks
            if isinstance(c, keras.callbacks.EarlyStopping) and c.best_weights is not None
        ),
        None,
    )
    model_epoch = restored.best_epoch + 1 if restored else len(history.get("loss", []))
    diverged = any(not math.isfinite(v) for v in history.get("loss", []))
    stopped_by = "diverged" if diverged else stopper.stopped_by if stopper else None
    if not stopped_by and deadline and deadline.epochs < deadline.planned:
        stopped_by = "timeout"
    pruned = pruned or stopped_by in PRUNING_STOPS

    # A diverged model's outputs are NaN: scored as the nothing it predicts.
    probs = np.nan_to_num(predict(model, dataset.x_test))
    test = evaluate(probs, dataset.y_test, p["loss"])
    if p["tta"] != "none":  # scored beside test_accuracy; selection never reads it
        views = np.concatenate(
            [tta(lambda x: predict(model, x), chunk, p["tta"]) for chunk in chunks(dataset.x_test)]
        )
        test["test_accuracy_tta"] = float(np.mean(views.argmax(1) == dataset.y_test))
    images = len(dataset.y_train) * len(history.get("loss", []))
    return TrialResult(
        model,
        history,
        test,
        probs,
        train_seconds,
        images / max(train_seconds, 1e-9),
        pruned,
        stopped_by,
        model_epoch,
        clock.val_seconds,
        costs(model, np.asarray(dataset.x_test[:1])),
        deadline.epochs if deadline and deadline.epochs != deadline.planned else None,
    )


def tta(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, mode: str) -> np.ndarray:
    """Test-time augmentation: the class probabilities of `x` averaged over views. flip: each
    image and its mirror; flip+translate (airbench): half of that, plus a quarter each of the
    same pair shifted one pixel up-left and one down-right (reflected edges)."""
    pair = (predict(x) + predict(x[:, :, ::-1])) / 2
    if mode == "flip":
        return pair
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    shifted = [padded[:, :-2, :-2], padded[:, 2:, 2:]]
    pairs = [(predict(view) + predict(view[:, :, ::-1])) / 2 for view in shifted]
    return 0.5 * pair + 0.25 * pairs[0] + 0.25 * pairs[1]


def shuffled_batches(
    x: Images, y: np.ndarray, batch_size: int, epochs: int, seed: int, alternate: bool = False
) -> tf.data.Dataset:
    """Batches of (x, y) for `epochs` epochs, a new order each epoch. With `alternate`, each
    image is mirrored every other epoch: a random half in the first epoch, then exactly the
    images that were not mirrored the epoch before (airbench's alternating flip: every image
    is seen both ways in any two epochs, where random flips repeat one side a quarter of the
    time). Images on disk are read a batch at a time, in file order within the batch."""
    rng = np.random.default_rng(seed)
    n = len(x)
    orders = tf.constant(np.stack([rng.permutation(n) for _ in range(epochs)]))
    first = tf.constant(rng.random(n) < 0.5)
    gather, labels = _gatherer(x), tf.constant(y)

    def batch(indices, epoch):
        if isinstance(x, DiskImages):
            indices = tf.sort(indices)  # a batch has no order; the file reads faster in one
        xb = gather(indices)
        if alternate:
            mirror = tf.not_equal(tf.gather(first, indices), tf.equal(epoch % 2, 1))
            xb = tf.where(mirror[:, None, None, None], tf.reverse(xb, axis=[2]), xb)
        return xb, tf.gather(labels, indices)

    return (
        tf.data.Dataset.range(epochs)
        .flat_map(
            lambda e: (
                tf.data.Dataset.from_tensor_slices(orders[e])
                .batch(batch_size)
                .map(lambda indices: (indices, e))
            )
        )
        .map(batch, num_parallel_calls=BATCHES_IN_FLIGHT)
        .prefetch(BATCHES_IN_FLIGHT)
        .with_options(_NOT_AUTOTUNED)
    )


def in_order(x: Images, y: np.ndarray | None, batch_size: int) -> tf.data.Dataset:
    """Batches of images from memory or disk in order (with their labels, unless None): for
    validation and prediction."""
    gather = _gatherer(x)
    positions = tf.data.Dataset.range(len(x)).batch(batch_size)
    if y is None:
        batches = positions.map(gather, num_parallel_calls=BATCHES_IN_FLIGHT)
    else:
        labels = tf.constant(y)
        batches = positions.map(
            lambda i: (gather(i), tf.gather(labels, i)), num_parallel_calls=BATCHES_IN_FLIGHT
        )
    return batches.prefetch(BATCHES_IN_FLIGHT).with_options(_NOT_AUTOTUNED)


def _gatherer(x: Images) -> Callable[[tf.Tensor], tf.Tensor]:
    """Images at positions: gathered from a constant, or read from the cache file."""
    if not isinstance(x, DiskImages):
        images = tf.constant(x)
        return lambda indices: tf.gather(images, indices)

    def read(indices):
        images = tf.numpy_function(x.read, [indices], tf.uint8, stateful=False)
        images.set_shape((None, *x.shape[1:]))
        return images

    return read


def predict(model: keras.Model, x: Images, batch_size: int = 512) -> np.ndarray:
    """Class probabilities for images in memory or on disk."""
    return model.predict(in_order(x, None, batch_size), verbose=0)


def chunks(x: Images, size: int = 4096) -> Iterator[np.ndarray]:
    """`x` as arrays in memory: itself, or from disk `size` images at a time (one at once)."""
    if not isinstance(x, DiskImages):
        yield x
        return
    for start in range(0, len(x), size):
        yield x[start : start + size].read()


def _inputs(p, x, y, epochs, seed) -> dict:
    """`fit`'s training inputs: one dataset for all the epochs (Keras keeps its iterator
    across them), read from memory or disk, mirrored alternately where `flip` says so."""
    return {
        "x": shuffled_batches(x, y, p["batch_size"], epochs, seed, p["flip"] == ALTERNATING),
        "steps_per_epoch": math.ceil(len(y) / p["batch_size"]),
        "shuffle": False,  # it shuffles itself
    }


def _validation(x, y, batch_size):
    return in_order(x, y, batch_size) if len(y) else None


def make_optimizer(
    p: dict, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule, steps: int
) -> keras.optimizers.Optimizer:
    """The optimizer `p` names on its learning-rate schedule (`schedule`), or on a schedule
    given (`p` is checked already)."""
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        learning_rate = schedule(p, learning_rate, steps)
    common = {
        "weight_decay": p["weight_decay"]
        if p["optimizer"] == "adamw"
        else p["weight_decay"] or None,
        "use_ema": bool(p["ema_momentum"]),
        "ema_momentum": p["ema_momentum"] or 0.99,
    }
    return OPTIMIZERS[p["optimizer"]](learning_rate, p, common)


def schedule(
    p: dict, learning_rate: float, steps: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate over the run that `p` names; `steps` is the trial's whole run, so a
    cosine schedule ends where the trial does."""
    if p["lr_schedule"] == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=p["decay_steps"], decay_rate=p["decay_rate"]
        )
    if p["lr_schedule"] == "cosine":
        warmup = int(steps * p["warmup_fraction"])
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else learning_rate,
            decay_steps=max(1, steps - warmup),
            alpha=p["final_lr_fraction"],
            warmup_target=learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    return learning_rate


@keras.saving.register_keras_serializable(package="sweeper")
class Resizable(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule`, planned over `steps`, that a run can end sooner or later (`end_at`): the
    rest of it then runs faster or slower, so a cosine still anneals to its end on the
    run's new last step. Its state is in variables, read by the compiled training step: no
    batch hook."""

    def __init__(self, schedule: keras.optimizers.schedules.LearningRateSchedule, steps: int):
        self.schedule = schedule
        self.steps = steps
        # the schedule's step at a run's step s: at + (s - since) * rate
        self.since = keras.Variable(0.0, dtype="float32", trainable=False)
        self.at = keras.Variable(0.0, dtype="float32", trainable=False)
        self.rate = keras.Variable(1.0, dtype="float32", trainable=False)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        return self.schedule(self.at + (step - self.since) * self.rate)

    def end_at(self, step: int, end: int) -> None:
        """From the run's `step` on, the schedule's remaining steps run in `end - step`."""
        value = lambda v: float(keras.ops.convert_to_numpy(v))  # noqa: E731
        at = value(self.at) + (step - value(self.since)) * value(self.rate)
        self.since.assign(float(step))
        self.at.assign(at)
        self.rate.assign((self.steps - at) / max(1, end - step))

    def get_config(self) -> dict:
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "steps": self.steps,
        }

    @classmethod
    def from_config(cls, config: dict) -> Resizable:
        return cls(keras.optimizers.schedules.deserialize(config["schedule"]), config["steps"])


class Deadline(keras.callbacks.Callback):
    """Ends a run on time with its schedule complete: after each epoch,
    `epochs_that_fit(seconds)` (each epoch's so far, from `clock`) says how many epochs in
    all there is time for, at most `most`; where that differs from the plan, `resizable`
    (if any) is re-timed to end with the new last epoch, where training stops. Progress
    printers read the change as `params["epochs_added"]`."""

    def __init__(
        self,
        epochs_that_fit: Callable[[list[float]], int],
        epochs: int,
        most: int,
        steps_per_epoch: int,
        resizable: Resizable | None,
        clock: EpochClock,
    ):
        super().__init__()
        self.epochs_that_fit = epochs_that_fit
        self.planned = self.epochs = epochs
        self.most = max(most, epochs)
        self.steps_per_epoch = steps_per_epoch
        self.resizable = resizable
        self.clock = clock

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        fit = max(done, min(self.most, self.epochs_that_fit(self.clock.epoch_seconds)))
        if fit != self.epochs:
            self.epochs = fit
            self.params["epochs_added"] = fit - self.planned
            if self.resizable and fit > done:
                self.resizable.end_at(done * self.steps_per_epoch, fit * self.steps_per_epoch)
        if done >= self.epochs:
            self.model.stop_training = True


def _loss(p):
    if p["loss"] == "mse":
        return "mean_squared_error"
    if p["label_smoothing"]:  # Keras' sparse loss has no smoothing: one-hot targets instead
        return keras.losses.CategoricalCrossentropy(label_smoothing=p["label_smoothing"])
    return "sparse_categorical_crossentropy"


def _targets(p, y, n_classes):
    one_hot = p["loss"] == "mse" or p["label_smoothing"]
    return np.eye(n_classes, dtype="float32")[y] if one_hot else y


def costs(model: keras.Model, image: np.ndarray) -> dict[str, float]:
    """What a model costs to ship: trainable parameters, the size of its `.keras` file as
    logged (no optimizer state), and the median latency of one image (`latency_ms`)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        keras.Model(model.inputs, model.outputs, name=model.name).save(path)
        size = path.stat().st_size
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return {
        "params": float(trainable),
        "model_mb": size / 1e6,
        "latency_ms": latency_ms(model.predict_on_batch, image),
    }


def latency_ms(
    predict: Callable[[np.ndarray], object],
    image: np.ndarray,
    *,
    warmup: int = LATENCY_WARMUP,
    calls: int = LATENCY_CALLS,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """The median milliseconds of `calls` single-image predictions, after `warmup` calls
    (the first traces the graph), on this process's threads (`devices.setup`)."""
    for _ in range(warmup):
        predict(image)
    seconds = []
    for _ in range(calls):
        start = clock()
        predict(image)
        seconds.append(clock() - start)
    return statistics.median(seconds) * 1000


def seconds_per_image(
    family: str,
    params: dict,
    input_shape: tuple[int, ...],
    n_classes: int,
    *,
    precision: str = "float32",
    steps: int = SPEED_STEPS,
    batch: int | None = None,
) -> float:
    """Seconds one training image takes `family` with `params` on this process's threads:
    the median of `steps` training steps of `batch` random images (default: its batch
    size, at most SPEED_BATCH), after the step that traces the graph. Before any trial ran,
    it is what a default sweep sizes its trials by."""
    p = schema.resolve(family, params)
    keras.backend.clear_session(free_memory=True)
    keras.mixed_precision.set_global_policy(precision)
    model = families.get(family).build(p, input_shape, n_classes)
    model.compile(optimizer=make_optimizer(p, p["learning_rate"], steps + 1), loss=_loss(p))
    batch = batch or min(p["batch_size"], SPEED_BATCH)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, *input_shape), dtype=np.uint8)
    y = _targets(p, rng.integers(0, n_classes, batch), n_classes)
    seconds = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:]) / batch


def _diverged(epoch: int, logs: dict) -> str | None:
    loss = logs.get("loss")
    return "diverged" if loss is not None and not math.isfinite(loss) else None


def _standard_callbacks(p):
    callbacks = [StopWhen(_diverged)]
    if p["early_stopping_patience"]:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=p["early_stopping_monitor"],
                patience=p["early_stopping_patience"],
                # the averaged weights are the model when weight averaging is on
                restore_best_weights=not p["ema_momentum"],
            )
        )
    return callbacks


def _fine_tunes(module, p):
    return hasattr(module, "fine_tune") and p.get("fine_tune_epochs", 0) > 0


def _fine_tune(model, module, p, dataset, y_train, y_val, callbacks, history, verbose, seed):
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
        **_inputs(p, dataset.x_train, y_train, p["fine_tune_epochs"], seed),
        validation_data=_validation(dataset.x_val, y_val, p["batch_size"]),
        initial_epoch=done,
        epochs=done + p["fine_tune_epochs"],
        callbacks=callbacks,
        verbose=verbose,
    )
    return {k: v + list(map(float, more.history.get(k, []))) for k, v in history.items()}
