"""Where runs go and how they are found: the store, experiments, searches, the sweep's parent.

Default store: SQLite at `mlruns/mlflow.db` with artifacts under `mlruns/artifacts`, no
server. `MLFLOW_TRACKING_URI` or `--tracking-uri` points elsewhere (an MLflow server, say).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, Run
from mlflow.tracking import MlflowClient

from sweeper.tracking import names
from sweeper.tracking.query import where

STORE_DIR = Path("mlruns")
TrackingError = mlflow.exceptions.MlflowException  # what a failed write to the store raises


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


def search_runs(
    tags: dict[str, object],
    *,
    status: str | None = None,
    newest_first: bool = False,
    max_results: int = 5000,
) -> list[Run]:
    """Runs of every experiment whose tags equal `tags` (None values ignored)."""
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    order = ["attributes.start_time DESC"] if newest_first else None
    return client.search_runs(
        experiments, where(tags, status=status), order_by=order, max_results=max_results
    )


def children(parent_run_id: str) -> list[Run]:
    """The trial runs of a sweep, ordered by trial number."""
    runs = search_runs({names.PARENT: parent_run_id})
    return sorted(runs, key=lambda r: int(r.data.tags.get(names.TRIAL_NUMBER, -1)))


def trial_of(parent_run_id: str, number: int) -> Run | None:
    """The completed run of trial `number` of a sweep, if its worker has written it."""
    runs = search_runs(
        {
            names.PARENT: parent_run_id,
            names.KIND: names.KIND_TRIAL,
            names.TRIAL_NUMBER: number,
            names.STATE: names.COMPLETE,
        }
    )
    return runs[0] if runs else None


def get_run(run_id: str) -> Run | None:
    try:
        return MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None


def tracking_uri() -> str:
    return mlflow.get_tracking_uri()


def metric_history(run_id: str, metric: str) -> list[tuple[int, float]]:
    """(step, value) of each logged value of `metric`, in order."""
    return [(m.step, m.value) for m in MlflowClient().get_metric_history(run_id, metric)]


def log_folder(run_id: str, folder: str | Path, artifact_path: str) -> None:
    MlflowClient().log_artifacts(run_id, str(folder), artifact_path)


def end_lost_run(run_id: str, why: str) -> None:
    """Closes, failed, the run of a trial whose worker died; `why` says how it was found."""
    client = MlflowClient()
    client.set_tag(run_id, names.STATE, names.FAILED)
    client.set_tag(run_id, names.ERROR, f"its worker died: {why}")
    client.set_terminated(run_id, names.RUN_STATUS[names.FAILED])


class ParentRun:
    """The sweep's one parent run: its params, best-so-far metrics and end state."""

    def __init__(self, run_id: str, client: MlflowClient | None = None):
        self.run_id = run_id
        self.client = client or MlflowClient()

    @classmethod
    def open(
        cls,
        experiment: str,
        study: str,
        *,
        tags: dict[str, str],
        params: dict[str, Any],
        sweep_file: str,
        metrics: dict[str, float],
        dataset: Any = None,
    ) -> ParentRun:
        """Found by its study tag when resuming, else created with `tags`, `params`, the
        sweep file and `metrics`.

        Workers starting together may each create one; all then settle on the oldest and the
        others delete their own, so the sweep keeps a single parent."""
        client = MlflowClient()
        query = where({names.KIND: names.KIND_SWEEP, names.STUDY: study})
        existing = _oldest(client.search_runs([experiment], query))
        if existing is None:
            run = client.create_run(
                experiment,
                run_name=f"sweep {study}",
                tags={names.KIND: names.KIND_SWEEP, names.STUDY: study, **tags},
            )
            mine = run.info.run_id
            client.log_batch(mine, params=[Param(k, str(v)) for k, v in params.items()])
            client.log_text(mine, sweep_file, names.SWEEP_FILE)
            now = int(time.time() * 1000)
            client.log_batch(mine, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
            existing = _oldest(client.search_runs([experiment], query)) or run
            if existing.info.run_id != mine:
                client.delete_run(mine)
        if dataset is not None:
            # The sweep's data as the parent's input: its dataset row then exists before the
            # trials' runs name it (MLflow's SQL store races when workers insert it at once).
            from sweeper.tracking.trial import log_dataset

            with mlflow.start_run(run_id=existing.info.run_id):  # ends it: RUNNING again below
                log_dataset(dataset)
        client.update_run(existing.info.run_id, status="RUNNING")
        return cls(existing.info.run_id, client)

    def log_best(
        self, metric: str, value: float, test_accuracy: float, step: int, run_label: str
    ) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[
                Metric(names.best(metric), value, now, step),
                Metric(names.BEST_TEST_ACCURACY, test_accuracy, now, step),
            ],
        )
        self.client.set_tag(self.run_id, names.BEST_RUN, run_label)

    def log_target_reached(self, seconds: float, number: int, run_label: str) -> None:
        self.client.log_metric(self.run_id, names.TARGET_REACHED_SECONDS, seconds, step=number)
        self.client.set_tag(self.run_id, names.TARGET_REACHED_BY, run_label)

    def log_refit(self, test: dict[str, float], run_label: str) -> None:
        for name in (names.TEST_ACCURACY, names.TEST_ACCURACY_TTA):
            if name in test:
                self.client.log_metric(self.run_id, f"refit_{name}", test[name])
        self.client.set_tag(self.run_id, names.REFIT_RUN, run_label)

    def end(self, status: str) -> None:
        """`status`: MLflow's FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status)


def _oldest(runs: list[Run]) -> Run | None:
    return min(runs, key=lambda r: (r.info.start_time, r.info.run_id), default=None)
