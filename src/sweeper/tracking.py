"""Everything MLflow: where runs go, one run per trial, per-epoch curves, results, plots.

Default store: SQLite at `mlruns/mlflow.db` with artifacts under `mlruns/artifacts`, no
server. `MLFLOW_TRACKING_URI` or `--tracking-uri` points elsewhere (an MLflow server, say).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from sweeper.train import confusion_matrix

STORE_DIR = Path("mlruns")
RUN_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}


def default_uri() -> str:
    return f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}"


def configure(tracking_uri: str | None = None) -> str:
    """Points MLflow at `tracking_uri`, else $MLFLOW_TRACKING_URI, else the local store."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


def experiment_id(name: str) -> str:
    """The experiment for a dataset, created on first use (artifacts beside a local store)."""
    found = mlflow.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    location = None
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):  # artifacts live beside the database file
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # another worker created it first
        return mlflow.get_experiment_by_name(name).experiment_id


@dataclass
class TrialRun:
    """A run being written; `state` decides how it ends (complete, pruned, failed)."""

    run_id: str
    state: str = "complete"


@contextlib.contextmanager
def trial_run(experiment: str, name: str, params: dict, tags: dict,
              parent_run_id: str | None = None):
    """One MLflow run; it always ends, failed when the body raises (Ctrl-C too)."""
    run = mlflow.start_run(experiment_id=experiment, run_name=name,
                           parent_run_id=parent_run_id, tags={k: str(v) for k, v in tags.items()})
    handle = TrialRun(run.info.run_id)
    try:
        mlflow.log_params(params)
        yield handle
    except BaseException as error:
        handle.state = "failed"
        mlflow.set_tags({"state": "failed", "error": f"{type(error).__name__}: {error}"[:5000]})
        mlflow.end_run(RUN_STATUS["failed"])
        raise
    else:
        mlflow.set_tag("state", handle.state)
        mlflow.end_run(RUN_STATUS[handle.state])


def search_all_runs(query: str, **kwargs) -> list:
    """Runs matching `query` in every experiment of the store."""
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, query, **kwargs)


def end_lost_run(run_id: str, worker: str) -> None:
    """Closes the run of a trial whose worker stopped answering (its process died)."""
    client = MlflowClient()
    client.set_tag(run_id, "state", "failed")
    client.set_tag(run_id, "error", f"worker {worker} stopped answering (heartbeat lost)")
    client.set_terminated(run_id, RUN_STATUS["failed"])


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics, learning rate and duration in one call (not per batch)."""

    def __init__(self, run_id: str, client: MlflowClient | None = None):
        super().__init__()
        self.run_id = run_id
        self.client = client or MlflowClient()
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        values = {k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"}
        values["learning_rate"] = float(keras.ops.convert_to_numpy(
            self.model.optimizer.learning_rate))
        values["epoch_seconds"] = time.perf_counter() - self._started
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, v, now, epoch + 1) for k, v in values.items()], synchronous=True)


def log_result(result, dataset, with_model: bool = True) -> None:
    """Final metrics, the model (with a signature), plots and the summary, on the active run.

    Pruned trials skip the model: they lost, and saving one costs seconds."""
    model = result.model
    mlflow.log_metrics({
        **{k: v for k, v in result.test.items()},
        "params_count": model.count_params(),
        "train_seconds": result.train_seconds,
        "images_per_second": result.images_per_second,
        "epochs": result.epochs,
        "best_val_accuracy": result.best("val_accuracy"),
    })
    if with_model:
        signature = mlflow.models.infer_signature(dataset.x_test[:2],
                                                  result.test_probabilities[:2])
        mlflow.keras.log_model(model, name="model", signature=signature,
                               pip_requirements=model_requirements())
    mlflow.log_dict({"class_names": list(dataset.class_names)}, "class_names.json")
    mlflow.log_text(_summary(model), "model_summary.txt")
    mlflow.log_figure(curves_figure(result.history), "curves.png")
    mlflow.log_figure(confusion_figure(dataset.y_test, result.test_probabilities.argmax(1),
                                       dataset.class_names), "confusion_matrix.png")


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


def _summary(model) -> str:
    out = io.StringIO()
    model.summary(print_fn=lambda line, **_: out.write(line + "\n"))
    return out.getvalue()


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, imported on first use (~0.3 s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_figure(history: dict):
    """Loss and accuracy by epoch, training against validation."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = history.get(key, [])
            ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set(title=metric, xlabel="epoch")
        ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def confusion_figure(y_true, y_pred, class_names):
    """Counts per true (rows) and predicted (columns) class, numbers in the cells."""
    plt = pyplot()
    n = len(class_names)
    matrix = confusion_matrix(y_true, y_pred, n)
    size = max(5, 0.6 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > matrix.max() / 2 else "black")
    ax.set(xticks=range(n), yticks=range(n), xlabel="Predicted label", ylabel="True label")
    ax.set_xticklabels(class_names, rotation=90)
    ax.set_yticklabels(class_names)
    fig.tight_layout()
    plt.close(fig)
    return fig


def model_uri(run_id: str) -> str | None:
    """The URI of the model a run logged (MLflow 3 keeps it as a LoggedModel), if any."""
    outputs = mlflow.get_run(run_id).outputs
    models = outputs.model_outputs if outputs else []
    return f"models:/{models[0].model_id}" if models else None
