"""Glue for one tracked trial: train it (`train`) inside an MLflow run (`tracking`).

Baselines, both sweep engines and `rerun` all come through here, so every run carries the
same params, curves and artifacts whichever path started it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import TextIO, TypeVar

import keras

from sweeper import devices, schema, tracking
from sweeper.data import Dataset
from sweeper.tracking import names
from sweeper.train import TrialResult, train

log = logging.getLogger(__name__)
T = TypeVar("T")


def epoch_printer(
    label: str, epochs: int, metric: str = "val_accuracy", stream: TextIO | None = None
) -> EpochPrinter:
    """Plain lines per epoch; on a terminal, also a live batch counter."""
    stream = stream or sys.stdout
    worker = os.environ.get(devices.WORKER_VARIABLE)
    cls = LiveEpochPrinter if stream.isatty() and not worker else EpochPrinter
    printer = cls(label, epochs, metric, stream)
    if worker:  # workers share the terminal: plain lines, each naming its worker
        printer.lead = f"[worker {worker}]   "
    return printer


class EpochPrinter(keras.callbacks.Callback):
    """One plain line per epoch, so pipes and log files read well. No batch hook: one would
    make Keras wait for every batch's logs."""

    lead = "  "  # what each line starts with

    def __init__(
        self, label: str, epochs: int, metric: str = "val_accuracy", stream: TextIO | None = None
    ):
        super().__init__()
        self.label, self.epochs, self.metric = label, epochs, metric
        self.stream = stream or sys.stdout
        self._added = 0  # epochs a `train.Deadline` re-planned (kept into a second phase)
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        print(self._line(epoch, logs or {}), file=self.stream, flush=True)

    @property
    def total(self) -> int:
        """The epochs in all, as last planned."""
        self._added = (self.params or {}).get("epochs_added", self._added)
        return self.epochs + self._added

    def _line(self, epoch, logs) -> str:
        keys = dict.fromkeys(("loss", "val_loss", "val_accuracy", self.metric))
        shown = " ".join(f"{k}={logs[k]:.4f}" for k in keys if k in logs)
        return (
            f"{self.lead}{self.label} epoch {epoch + 1}/{self.total} {shown} "
            f"({time.perf_counter() - self._started:.1f}s)"
        )


class LiveEpochPrinter(EpochPrinter):
    """On a terminal: a batch counter that each epoch's line replaces. Safe to run on
    Keras' async dispatch, so training does not wait for it."""

    async_safe = True

    def __init__(
        self, label: str, epochs: int, metric: str = "val_accuracy", stream: TextIO | None = None
    ):
        super().__init__(label, epochs, metric, stream)
        self._epoch, self._shown = 0, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_begin(epoch, logs)
        self._epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        print(f"\r{self._line(epoch, logs or {})}\033[K", file=self.stream, flush=True)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if now - self._shown < 0.5:  # a few redraws a second at most
            return
        self._shown = now
        steps = self.params.get("steps") or "?"
        loss = (logs or {}).get("loss")
        shown = f" loss={loss:.4f}" if loss is not None else ""
        self.stream.write(
            f"\r  {self.label} epoch {self._epoch + 1}/{self.total} "
            f"batch {batch + 1}/{steps}{shown}\033[K"
        )
        self.stream.flush()


def tracked_trial(
    family: str,
    params: dict,
    dataset: Dataset,
    *,
    experiment: str | Callable[[], str],
    run_name: str,
    epochs: int,
    seed: int,
    tags: dict,
    parent_run_id: str | Callable[[], str] | None = None,
    should_prune: Callable[[int, dict], bool] | None = None,
    precision: str = "float32",
    stop_when: Callable[[int, dict], str | None] | None = None,
    epochs_that_fit: Callable[[list[float]], int] | None = None,
    most_epochs: int = 0,
    on_start: Callable[[str], None] | None = None,
    optimizer: bool = False,
    background: bool = False,
) -> tuple[TrialResult, tracking.TrialRecorder]:
    """Trains one trial and logs it; a pruned trial is logged with its curves so far.

    `epochs_that_fit` and `most_epochs` keep a deadline (`train.Deadline`).
    `on_start(run_id)` lets an engine note which MLflow run holds its trial. `optimizer`:
    the logged model keeps its optimizer's state. `background`: the run is written by the
    writer thread while training goes on (`tracking.flush` waits); `experiment` and
    `parent_run_id` may then be functions, called there when the run opens."""
    full = schema.resolve(family, params)
    logged = {
        **full,
        "family": family,
        "dataset": dataset.name,
        "seed": seed,
        "max_epochs": epochs,
        "precision": precision,
        **dataset.sizes,
        **dataset.options,
    }
    all_tags = {names.FAMILY: family, names.DATASET: dataset.name, **tags}

    def open_run() -> tracking.TrialRun:
        return tracking.open_run(
            _value(experiment), run_name, logged, all_tags, _value(parent_run_id), dataset
        )

    recorder = tracking.TrialRecorder(run_name, open_run, background=background, on_open=on_start)
    callbacks: list[keras.callbacks.Callback] = [tracking.EpochLogger(recorder)]
    if log.isEnabledFor(logging.INFO):  # -q: no progress lines
        fine_tune = int(full.get("fine_tune_epochs") or 0)  # transfer's second phase
        callbacks.append(epoch_printer(run_name, epochs + fine_tune))
    tracking.wait_for_models()  # the trial before's model, saved before Keras is reset
    try:
        result = train(
            family,
            full,
            dataset,
            epochs=epochs,
            seed=seed,
            callbacks=callbacks,
            should_prune=should_prune,
            precision=precision,
            stop_when=stop_when,
            epochs_that_fit=epochs_that_fit,
            most_epochs=most_epochs,
        )
        # Waits only while the writer is on the trial before (tiny trials): it then holds
        # one trial's writes at most. Raises why the run could not open.
        recorder.wait_open()
        if result.pruned:
            recorder.state = names.PRUNED
        if result.stopped_by:
            recorder.tags[names.STOPPED_BY] = result.stopped_by
        recorder.complete(result, dataset, with_model=not result.pruned, optimizer=optimizer)
    except BaseException as error:
        recorder.fail(error)
        raise
    return result, recorder


def _value(x: T | Callable[[], T]) -> T:
    return x() if callable(x) else x
