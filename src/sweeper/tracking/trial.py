"""One run per trial: its params and tags, per-epoch curves, final metrics, model and plots."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import keras
import mlflow
from mlflow.entities import LoggedModelOutput, Metric
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from sweeper import plots
from sweeper.data import Dataset
from sweeper.tracking import names

log = logging.getLogger(__name__)


@dataclass
class TrialRun:
    """A run being written; `state` decides how it ends (complete, pruned, failed)."""

    run_id: str
    experiment_id: str
    state: str = names.COMPLETE
    tags: dict[str, str] = field(default_factory=dict)  # set when the run ends


@contextlib.contextmanager
def trial_run(
    experiment: str,
    name: str,
    params: dict[str, Any],
    tags: dict[str, Any],
    parent_run_id: str | None = None,
) -> Iterator[TrialRun]:
    """One MLflow run; it always ends, failed when the body raises (Ctrl-C too)."""
    run = mlflow.start_run(
        experiment_id=experiment,
        run_name=name,
        parent_run_id=parent_run_id,
        tags={k: str(v) for k, v in tags.items()},
    )
    handle = TrialRun(run.info.run_id, run.info.experiment_id)
    try:
        mlflow.log_params(params)
        yield handle
    except BaseException as error:
        handle.state = names.FAILED
        try:
            mlflow.set_tags(
                {names.STATE: names.FAILED, names.ERROR: f"{type(error).__name__}: {error}"[:5000]}
            )
            if not isinstance(error, KeyboardInterrupt):  # the console shows one line of it
                mlflow.log_text(traceback.format_exc(), names.TRACEBACK)
            mlflow.end_run(names.RUN_STATUS[names.FAILED])
        except Exception as unrecorded:  # a full disk, say: the trial's own error comes first
            log.warning("run %s: its failure was not recorded: %s", handle.run_id, unrecorded)
        raise
    else:
        mlflow.set_tags({**handle.tags, names.STATE: handle.state})
        mlflow.end_run(names.RUN_STATUS[handle.state])


def log_dataset(dataset: Dataset) -> None:
    """The training data as the active run's input (name, source, digest), so MLflow's
    Dataset column and views show what each trial trained on."""
    cached = _INPUTS.get(id(dataset))
    if cached is None or cached[0] is not dataset:
        with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways"
            warnings.simplefilter("ignore", UserWarning)
            entity = mlflow.data.from_numpy(
                dataset.x_train, targets=dataset.y_train, source=dataset.source, name=dataset.name
            )
        cached = _INPUTS[id(dataset)] = (dataset, entity)  # the digest costs ~0.1 s: once
    try:
        mlflow.log_input(cached[1], context="training")
    except mlflow.exceptions.MlflowException as error:
        # Lineage only: MLflow's SQL store can race on a dataset's first row when workers
        # start together (the sweep's parent logs it first to avoid that); never fail a trial.
        log.warning("could not record the training data as the run's input: %s", error)


_INPUTS: dict[int, tuple[Dataset, Any]] = {}


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics, learning rate and duration in one call (not per batch)."""

    def __init__(self, run_id: str, client: MlflowClient | None = None):
        super().__init__()
        self.run_id = run_id
        self.client = client or MlflowClient()
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = {k: float(v) for k, v in (logs or {}).items() if k != names.LEARNING_RATE}
        values[names.LEARNING_RATE] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        values[names.EPOCH_SECONDS] = time.perf_counter() - self._started
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, v, now, epoch + 1) for k, v in values.items()],
            synchronous=True,
        )


def log_result(
    result: Any,
    dataset: Dataset,
    run: TrialRun,
    *,
    with_model: bool = True,
    optimizer: bool = False,
    background: bool = False,
) -> None:
    """Final metrics on the active run, then its model (with a signature), plots and summary.

    `result` is a `train.TrialResult`. Pruned trials skip the model: they lost, and saving
    one costs seconds. The model is saved without its optimizer's state unless `optimizer`.
    `background`: the artifacts are written by one writer thread while the next trial trains
    (`flush` waits for them); the metrics, which the sweep reads at once, never are."""
    model = result.model
    mlflow.log_metrics(
        {
            **result.test,
            names.PARAMS_COUNT: model.count_params(),
            names.TRAIN_SECONDS: result.train_seconds,
            names.IMAGES_PER_SECOND: result.images_per_second,
            names.EPOCHS: result.epochs,
            names.BEST_VAL_ACCURACY: result.best("val_accuracy"),
        }
    )
    if with_model and not optimizer:  # the same layers and weights, never compiled
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    saved = model if with_model else None
    write = functools.partial(_log_artifacts, run.run_id, run.experiment_id, saved, result, dataset)
    if background:
        _PENDING.append(_writer().submit(_warn_on_error(write, run.run_id)))
    else:
        write()


def flush() -> None:
    """Waits until every artifact handed to the writer thread is written."""
    while _PENDING:
        _PENDING.pop(0).result()


def _log_artifacts(
    run_id: str, experiment: str, model: keras.Model | None, result: Any, dataset: Dataset
) -> None:
    client = MlflowClient()
    if model is not None:
        # The documented way to log a model to a run that is not this thread's active run.
        logged = mlflow.initialize_logged_model(
            name=names.MODEL, source_run_id=run_id, experiment_id=experiment
        )
        mlflow.keras.log_model(
            model,
            name=names.MODEL,
            model_id=logged.model_id,
            signature=mlflow.models.infer_signature(
                dataset.x_test[:2], result.test_probabilities[:2]
            ),
            pip_requirements=model_requirements(),
        )
        active = mlflow.active_run()
        if active is None or active.info.run_id != run_id:  # else log_model linked it
            client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    client.log_dict(run_id, {"class_names": list(dataset.class_names)}, names.CLASS_NAMES)
    client.log_text(run_id, _summary(result.model), "model_summary.txt")
    client.log_figure(run_id, plots.curves_figure(result.history), "curves.png")
    client.log_figure(
        run_id,
        plots.confusion_figure(
            dataset.y_test, result.test_probabilities.argmax(1), dataset.class_names
        ),
        "confusion_matrix.png",
    )


def _warn_on_error(write: Callable[[], None], run_id: str) -> Callable[[], None]:
    """The trial is over and recorded: a failed artifact write (a full disk, a store gone)
    is reported, and the sweep goes on."""

    def job() -> None:
        try:
            write()
        except Exception as error:
            log.warning("run %s: its artifacts were not all written: %s", run_id, error)

    return job


@functools.cache
def _writer() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweeper-artifacts")


_PENDING: list[Future] = []


@functools.cache
def model_requirements() -> list[str]:
    """Keras and its backend, pinned: what loading a logged model needs. Given explicitly
    because MLflow's inference reloads the model in a subprocess, ~5 s per trial."""
    wanted = [f"keras=={metadata.version('keras')}"]
    backend = keras.backend.backend()
    for dist in (backend, f"{backend}-cpu"):  # tensorflow or tensorflow-cpu, say
        try:
            return [*wanted, f"{dist}=={metadata.version(dist)}"]
        except metadata.PackageNotFoundError:
            continue
    return wanted


def _summary(model: keras.Model) -> str:
    out = io.StringIO()
    model.summary(print_fn=lambda line, **_: out.write(line + "\n"))
    return out.getvalue()


def model_uri(run_id: str) -> str | None:
    """The URI of the model a run logged (MLflow 3 keeps it as a LoggedModel), if any."""
    run = mlflow.get_run(run_id)
    models = run.outputs.model_outputs if run.outputs else []
    if not models or names.MODEL_DROPPED in run.data.tags:
        return None
    return f"models:/{models[0].model_id}"


def drop_model(run_id: str, why: str) -> None:
    """Deletes the models a run logged, files and all, as `mlflow gc` does for deleted
    models; the run keeps its params, curves and plots, and a tag says `why`."""
    client = MlflowClient()
    run = client.get_run(run_id)
    for output in run.outputs.model_outputs if run.outputs else []:
        model = client.get_logged_model(output.model_id)
        client.delete_logged_model(output.model_id)
        get_artifact_repository(model.artifact_location).delete_artifacts()
    client.set_tag(run_id, names.MODEL_DROPPED, why)


def load_model(run_id: str) -> tuple[keras.Model, list[str]] | None:
    """The model a run logged and its class names; None when it logged no model."""
    uri = model_uri(run_id)
    if uri is None:
        return None
    model = mlflow.keras.load_model(uri)
    class_names = mlflow.artifacts.load_dict(f"runs:/{run_id}/{names.CLASS_NAMES}")
    return model, class_names["class_names"]
