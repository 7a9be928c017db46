"""A trial's run as the training side sees it, written in order by one writer thread.

A sweep trains while the writer thread does its MLflow work: the parent run, each trial's
run (params, curves, final metrics, model, plots, end state), in the order they were asked
for. MLflow itself is imported by the writer's first job, so a sweep's first training step
waits for neither MLflow's import (~0.7 s) nor a new store's schema (~1.3 s), and a trial's
bookkeeping never sits between two trials' training. `flush` waits for all of it.

This module does not import MLflow; `trial` and `store` do, on the thread that first needs
them. Synchronous recorders (baselines, reruns, refits) do every write at once instead.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, TypeVar

from sweeper.errors import disk_full
from sweeper.tracking import names

if TYPE_CHECKING:
    import keras

    from sweeper.data import Dataset
    from sweeper.tracking.trial import TrialRun

log = logging.getLogger(__name__)
T = TypeVar("T")


class Writer:
    """The writer thread and what it owes: the jobs not yet done (`flush`), the logged
    models still being saved (`wait_for_models`), and a full disk a background write met
    (`disk_full`). One per process (`WRITER`): MLflow's active run is a thread's, so every
    write of a sweep goes through the one thread that holds it."""

    def __init__(self) -> None:
        self._pending: list[Future] = []
        self._keras_writes: list[tuple[Future, Future]] = []  # (Keras writes over, whole job)
        self._disk_full: list[BaseException] = []
        self._thread = threading.local()

    @functools.cached_property
    def _executor(self) -> ThreadPoolExecutor:  # started by the first job
        return ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sweeper-writer", initializer=self._mark
        )

    def _mark(self) -> None:
        self._thread.is_writer = True

    def submit(self, job: Callable[[], T]) -> Future[T]:
        if self.on_writer():
            return _run_now(job)
        future = self._executor.submit(job)
        self._pending.append(future)
        return future

    def on_writer(self) -> bool:
        return bool(getattr(self._thread, "is_writer", False))

    def flush(self) -> None:
        while self._pending:
            done, _ = wait(list(self._pending))
            for future in done:
                self._pending.remove(future)

    def saving_model(self, keras_done: Future, job: Future) -> None:
        """`job` saves a model; `keras_done` is set once its Keras writes are over."""
        self._keras_writes.append((keras_done, job))

    def wait_for_models(self) -> None:
        while self._keras_writes:
            keras_done, job = self._keras_writes.pop(0)
            wait([keras_done, job], return_when=FIRST_COMPLETED)  # the job may end without it

    def met_full_disk(self, error: BaseException) -> None:
        self._disk_full.append(error)

    def take_disk_full(self) -> BaseException | None:
        found = self._disk_full[0] if self._disk_full else None
        self._disk_full.clear()
        return found


WRITER = Writer()


def submit(job: Callable[[], T]) -> Future[T]:
    """Runs `job` on the writer thread after every job submitted before it. A job that
    submits another runs it at once: queued, it would wait behind its caller forever."""
    return WRITER.submit(job)


def on_writer() -> bool:
    """Whether this is the writer thread (a job running)."""
    return WRITER.on_writer()


def flush() -> None:
    """Waits until the writer has done every job submitted so far. Raises nothing: a job's
    error goes to whoever waits for its result, or is warned about (`warn_on_error`)."""
    WRITER.flush()


def wait_for_models() -> None:
    """Waits until the writer has saved every logged model so far. The next trial's
    `clear_session` resets Keras' global state, which a model being saved still reads; its
    plots and run bookkeeping may go on beside training."""
    WRITER.wait_for_models()


def warn_on_error(job: Callable[[], None], what: str) -> Callable[[], None]:
    """A write nobody waits for (the trial is over and recorded): its failure (a full disk,
    a store gone) is one warning, and the sweep goes on."""

    def guarded() -> None:
        try:
            job()
        except Exception as error:
            if disk_full(error):  # every later write would meet it too: the sweep stops
                WRITER.met_full_disk(error)
            log.warning("%s: %s", what, error)

    return guarded


def disk_full_on_writer() -> BaseException | None:
    """The full-disk error a background write met since the last call, if any (taken: the
    sweep that reads it stops on it)."""
    return WRITER.take_disk_full()


def _run_now(job: Callable[[], T]) -> Future[T]:
    future: Future[T] = Future()
    try:
        future.set_result(job())
    except BaseException as error:  # Ctrl-C too: raised where the result is asked for
        future.set_exception(error)
    return future


def _trial_module() -> Any:
    # Imported by the first job, on the thread that runs it: MLflow comes with it.
    from sweeper.tracking import trial

    return trial


class TrialRecorder:
    """One trial's run. `open_run` creates it (params, tags, training data) and returns its
    `trial.TrialRun`; it runs on the first write, so a run exists only for a trial that
    started. `background`: writes go to the writer thread (`flush` waits for them) and a
    failed write after the run's opening is a warning; else each write is done before the
    call returns, and its error raised."""

    def __init__(
        self,
        label: str,
        open_run: Callable[[], TrialRun],
        *,
        background: bool = False,
        on_open: Callable[[str], None] | None = None,
    ):
        self.label = label
        self._open_run = open_run
        self.on_open = on_open  # hears the run's id as soon as it exists (on the writer)
        self.background = background
        self._run: Future[TrialRun] | None = None
        self.tags: dict[str, str] = {}  # set on the run when it ends
        self.state = names.COMPLETE

    def start(self) -> None:
        """Opens the run, once; raises why it could not (at once unless `background`)."""
        opening = self._opening()
        if not self.background:
            opening.result()

    def _opening(self) -> Future[TrialRun]:
        if self._run is None:
            self._run = self._do(self._open)
        return self._run

    def _open(self) -> TrialRun:
        run = self._open_run()
        if self.on_open:
            on_open = self.on_open
            warn_on_error(lambda: on_open(run.run_id), f"{self._name(run)}: not noted")()
        return run

    @property
    def run_id(self) -> str:
        return self.wait_open()

    def wait_open(self) -> str:
        """The run's id (waits for the writer); raises why the run could not be opened."""
        return self._opening().result().run_id

    def opened(self) -> str | None:
        """The run's id if it exists already, without waiting; raises why it could not be
        opened, so training stops at once when the store cannot be written."""
        if self._run is None or not self._run.done():
            return None
        return self._run.result().run_id

    def log_epoch(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._write(
            lambda run: _trial_module().log_epoch(run.run_id, values, step, now),
            "its curves were not all written",
        )

    def complete(self, result: Any, dataset: Dataset, *, with_model: bool, optimizer: bool) -> None:
        """Final metrics, model and plots (`result` is a `train.TrialResult`), then the end
        state (`self.state`, `self.tags`)."""
        saved = _saved_model(result.model, with_model, optimizer)
        keras_done: Future[None] = Future()  # the writes that use Keras are over

        def write(run: TrialRun) -> None:
            trial = _trial_module()
            trial.log_final_metrics(run.run_id, result)
            model = functools.partial(trial.log_model, run, saved, result, dataset)
            plots = functools.partial(trial.log_plots, run, result, dataset)
            for part in (model, plots):
                if self.background:
                    warn_on_error(part, f"{self._name(run)}: its artifacts were not all written")()
                else:
                    part()
                if part is model:
                    keras_done.set_result(None)
            trial.end_run(self.state, self.tags)

        job = self._write(write, "its end was not recorded")
        WRITER.saving_model(keras_done, job)

    def fail(self, error: BaseException) -> None:
        """Ends the run failed with `error` (its traceback kept, not for Ctrl-C). Best
        effort: a store that refuses this too is a warning; the trial's error comes first."""
        self.state = names.FAILED
        text = "" if isinstance(error, KeyboardInterrupt) else traceback.format_exc()
        what = f"{type(error).__name__}: {error}"
        self._write(
            lambda run: _trial_module().fail_run(what, text),
            "its failure was not recorded",
            always_warn=True,
        )

    def _write(
        self, write: Callable[[TrialRun], None], what: str, *, always_warn: bool = False
    ) -> Future[None]:
        """`write(run)` once the run is open; `what` names a failure when it is warned."""
        opened = self._opening()
        warned = self.background or always_warn

        def job() -> None:
            run = opened.result()  # a run that could not open: raised to whoever waits for it
            if warned:
                warn_on_error(lambda: write(run), f"{self._name(run)}: {what}")()
            else:
                write(run)

        future = self._do(job)
        if not self.background and not warned:
            future.result()
        return future

    def _do(self, job: Callable[[], T]) -> Future[T]:
        return submit(job) if self.background else _run_now(job)

    def _name(self, run: TrialRun) -> str:
        return f"run {self.label} ({run.run_id})"


def _saved_model(model: keras.Model, with_model: bool, optimizer: bool) -> keras.Model | None:
    """What is logged: None for no model; without its optimizer's state (an uncompiled model
    over the same layers and weights) unless `optimizer`."""
    import keras  # only a trial that trained calls this: `sweeper ui` and `best` stay light

    if not with_model:
        return None
    return model if optimizer else keras.Model(model.inputs, model.outputs, name=model.name)
