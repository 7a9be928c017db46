"""One run per trial: its params and tags, per-epoch curves, final metrics, model and plots."""

from __future__ import annotations

import functools
import io
import logging
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.entities import Metric
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from sweeper import plots
from sweeper.data import Dataset
from sweeper.tracking import names

log = logging.getLogger(__name__)


@dataclass
class TrialRun:
    """A trial's open run. Opened, written and ended through a `recorder.TrialRecorder`,
    all on one thread: MLflow's active run is per thread."""

    run_id: str
    experiment_id: str


def open_run(
    experiment: str,
    name: str,
    params: dict[str, Any],
    tags: dict[str, Any],
    parent_run_id: str | None = None,
    dataset: Dataset | None = None,
) -> TrialRun:
    """Starts the run as this thread's active run, with its params, tags and training data."""
    run = mlflow.start_run(
        experiment_id=experiment,
        run_name=name,
        parent_run_id=parent_run_id,
        tags={k: str(v) for k, v in tags.items()},
    )
    try:
        mlflow.log_params(params)
        if dataset is not None:
            log_dataset(dataset)
    except BaseException:
        mlflow.end_run(names.RUN_STATUS[names.FAILED])
        raise
    return TrialRun(run.info.run_id, run.info.experiment_id)


def log_epoch(run_id: str, values: dict[str, float], step: int, timestamp: int) -> None:
    """One epoch's metrics in one call (MLflow on SQLite costs ~3 ms a call)."""
    MlflowClient().log_batch(
        run_id, metrics=[Metric(k, v, timestamp, step) for k, v in values.items()]
    )


def log_final_metrics(run_id: str, result: Any) -> None:
    """The test scores and the trial's size and speed (`result`: a `train.TrialResult`)."""
    model = result.model
    now = int(time.time() * 1000)
    values = {
        **result.test,
        names.PARAMS_COUNT: model.count_params(),
        names.TRAIN_SECONDS: result.train_seconds,
        names.IMAGES_PER_SECOND: result.images_per_second,
        names.EPOCHS: result.epochs,
        # the saved model's: its epoch's (early stopping restores one), not the best seen
        names.BEST_VAL_ACCURACY: result.score("val_accuracy"),
        names.MODEL_EPOCH: result.model_epoch,
        **result.costs,  # params, model_mb, latency_ms: what an objective may weigh
    }
    MlflowClient().log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in values.items()])


def end_run(state: str, tags: dict[str, str]) -> None:
    """Ends this thread's active run in `state` (complete, pruned), with `tags` and the
    state's tag."""
    try:
        mlflow.set_tags({**tags, names.STATE: state})
    finally:
        mlflow.end_run(names.RUN_STATUS[state])


def fail_run(error: str, trace: str) -> None:
    """Ends this thread's active run failed with `error` (one line) and its traceback
    `trace`, if any."""
    try:
        mlflow.set_tags({names.STATE: names.FAILED, names.ERROR: error[:5000]})
        if trace:  # the console shows one line of it
            mlflow.log_text(trace, names.TRACEBACK)
    finally:
        mlflow.end_run(names.RUN_STATUS[names.FAILED])


def log_dataset(dataset: Dataset) -> None:
    """The training data as the active run's input (name, source, digest), so MLflow's
    Dataset column and views show what each trial trained on. MLflow sees one image
    broadcast to the split's shape and the dataset's own digest: nothing is copied or read."""
    first = np.asarray(dataset.x_train[:1])
    with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways"
        warnings.simplefilter("ignore", UserWarning)
        entity = mlflow.data.from_numpy(
            np.broadcast_to(first, dataset.x_train.shape),
            targets=dataset.y_train,
            source=dataset.source,
            name=dataset.name,
            digest=dataset.digest,
        )
    try:
        mlflow.log_input(entity, context="training")
    except mlflow.exceptions.MlflowException as error:
        # Lineage only: MLflow's SQL store can race on a dataset's first row when workers
        # start together (the sweep's parent logs it first to avoid that); never fail a trial.
        log.warning("could not record the training data as the run's input: %s", error)


def log_model(run: TrialRun, model: keras.Model | None, result: Any, dataset: Dataset) -> None:
    """The model (None: no model) with its signature, and its summary: the writes that use
    Keras. The run is this thread's active run (`open_run`): `log_model` links the model."""
    run_id = run.run_id
    client = MlflowClient()
    if model is not None:
        mlflow.keras.log_model(
            model,
            name=names.MODEL,
            signature=mlflow.models.infer_signature(
                np.asarray(dataset.x_test[:2]), result.test_probabilities[:2]
            ),
            pip_requirements=model_requirements(),
        )
    client.log_text(run_id, _summary(result.model), "model_summary.txt")


def log_plots(run: TrialRun, result: Any, dataset: Dataset) -> None:
    """Class names, learning curves and the confusion matrix (no Keras)."""
    run_id = run.run_id
    client = MlflowClient()
    client.log_dict(run_id, {"class_names": list(dataset.class_names)}, names.CLASS_NAMES)
    client.log_figure(run_id, plots.curves_figure(result.history), "curves.png")
    client.log_figure(
        run_id,
        plots.confusion_figure(
            dataset.y_test, result.test_probabilities.argmax(1), dataset.class_names
        ),
        "confusion_matrix.png",
    )


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
