"""Where runs go and how they are found: the store, experiments, searches, the sweep's parent.

Default store: SQLite at `mlruns/mlflow.db` with artifacts under `mlruns/artifacts`, no
server. `MLFLOW_TRACKING_URI` or `--tracking-uri` points elsewhere (an MLflow server, say).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, Run
from mlflow.tracking import MlflowClient

from sweeper import data
from sweeper.data import Dataset
from sweeper.errors import SweeperError
from sweeper.metrics import standard_error
from sweeper.tracking import names
from sweeper.tracking.query import where

log = logging.getLogger(__name__)

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


def experiment_name(name: str, identity: str) -> str:
    """The experiment a dataset's runs go to: its short name, unless that experiment holds
    another dataset's runs (a folder of the same last name elsewhere): then the name and a
    digest of the identity (`flowers-3f2a1c`), the same on every run of that dataset."""
    if identity == name:  # a named dataset: its name is its identity
        return name
    candidates = (name, data.unique_name(identity))
    for candidate in candidates:
        found = mlflow.get_experiment_by_name(candidate)
        if found is None or found.tags.get(names.DATASET_IDENTITY) in (None, identity):
            return candidate
    return candidates[-1]  # held by a third dataset of the same digest: experiment_id says so


def own_experiment(dataset: Dataset) -> Dataset:
    """`dataset` named as its own experiment (`experiment_name`), so its runs' `dataset` tag
    and `sweeper best --dataset` tell two folders of the same name apart."""
    name = experiment_name(dataset.name, dataset.identity)
    if name == dataset.name:
        return dataset
    log.info(
        "experiment %s holds the runs of other images; %s's go to experiment %s",
        dataset.name,
        dataset.identity,
        name,
    )
    return dataclasses.replace(dataset, name=name)


def experiment_id(name: str, identity: str | None = None) -> str:
    """The experiment for a dataset, created on first use (artifacts beside a local store).
    `identity` (a folder's resolved path): an experiment of the same name that holds
    another dataset's runs is refused, not mixed into."""
    found = mlflow.get_experiment_by_name(name)
    if found:
        held = found.tags.get(names.DATASET_IDENTITY)
        if identity and held and held != identity:
            raise SweeperError(
                f"MLflow experiment {name!r} holds the runs of {held}; {identity} has the same "
                "name: give its folder another name (the experiment takes it), or use another "
                "--tracking-uri"
            )
        client = MlflowClient()
        if names.EXPERIMENT_KIND not in found.tags:  # made before sweeper tagged its kind
            client.set_experiment_tag(
                found.experiment_id, names.EXPERIMENT_KIND, names.MODEL_TRAINING
            )
        if identity and not held:
            client.set_experiment_tag(found.experiment_id, names.DATASET_IDENTITY, identity)
        return found.experiment_id
    location = None
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):  # artifacts live beside the database file
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    try:
        return mlflow.create_experiment(
            name,
            artifact_location=location,
            tags={  # the UI opens on the runs
                names.EXPERIMENT_KIND: names.MODEL_TRAINING,
                **({names.DATASET_IDENTITY: identity} if identity else {}),
            },
        )
    except mlflow.exceptions.MlflowException:  # another worker created it first
        return mlflow.get_experiment_by_name(name).experiment_id


def experiments() -> list[tuple[str, str]]:
    """(id, name) of each experiment that holds runs (MLflow's empty Default left out)."""
    found = MlflowClient().search_experiments()
    return [(e.experiment_id, e.name) for e in found if e.name != "Default"]


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


def set_tags(run_id: str, tags: dict[str, str]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def mark_front(parent_run_id: str, front: set[int]) -> None:
    """Tags a sweep's complete trials `pareto=yes` (their number in `front`) or `no`,
    writing only the tags that change."""
    for run in children(parent_run_id):
        tags = run.data.tags
        if tags.get(names.KIND) != names.KIND_TRIAL or tags.get(names.STATE) != names.COMPLETE:
            continue
        wanted = "yes" if int(tags.get(names.TRIAL_NUMBER, -1)) in front else "no"
        if tags.get(names.PARETO) != wanted:
            MlflowClient().set_tag(run.info.run_id, names.PARETO, wanted)


def get_run(run_id: str) -> Run | None:
    """The run, or None when the store has no such run; a store that cannot be reached
    raises (it is no answer that the run does not exist)."""
    try:
        return MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise SweeperError(f"could not read run {run_id} from {tracking_uri()}: {error}") from None


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

    def sweep_file(self) -> str:
        """The sweep file the sweep ran, as it logged it."""
        return mlflow.artifacts.load_text(f"runs:/{self.run_id}/{names.SWEEP_FILE}")

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

    def log_refit(self, test: dict[str, float], run_label: str, why: str = "") -> None:
        """The refit's test accuracy, its run, and `why` its trial was the one refitted."""
        for name in (names.TEST_ACCURACY, names.TEST_ACCURACY_TTA):
            if name in test:
                self.client.log_metric(self.run_id, f"refit_{name}", test[name])
        self.client.set_tag(self.run_id, names.REFIT_RUN, run_label)
        if why:
            self.client.set_tag(self.run_id, names.REFIT_CHOICE, why)

    def log_front(self, objectives: list[tuple[str, str]]) -> None:
        """The Pareto front of a multi-objective sweep, from its trials' `pareto` tags: a
        figure (`pareto_front.png`: the first objective against each other one, the recipe
        trials marked) and a table (`pareto_front.md`)."""
        from sweeper.plots import front_figure

        metrics = [m for m, _ in objectives]
        runs = [
            r
            for r in children(self.run_id)
            if r.data.tags.get(names.KIND) == names.KIND_TRIAL
            and r.data.tags.get(names.STATE) == names.COMPLETE
            and all(m in r.data.metrics for m in metrics)
        ]
        if not runs:
            return

        def point(run: Run) -> dict[str, float]:
            return {m: run.data.metrics[m] for m in metrics}

        front = [r for r in runs if r.data.tags.get(names.PARETO) == "yes"]
        recipes = [point(r) for r in runs if r.data.tags.get(names.BASELINE) == "yes"]
        figure = front_figure(
            [point(r) for r in runs], [point(r) for r in front], recipes, metrics[0], metrics[1:]
        )
        self.client.log_figure(self.run_id, figure, "pareto_front.png")
        header = ["trial", *metrics, names.TEST_ACCURACY]
        rows = [
            [r.info.run_name, *(f"{r.data.metrics.get(m, float('nan')):.4g}" for m in header[1:])]
            for r in sorted(front, key=lambda r: -r.data.metrics[metrics[0]])
        ]
        table = "\n".join(
            "| " + " | ".join(row) + " |" for row in [header, ["---"] * len(header), *rows]
        )
        self.client.log_text(self.run_id, table + "\n", "pareto_front.md")

    def end(self, status: str) -> None:
        """`status`: MLflow's FINISHED, FAILED or KILLED. The sweep's answer is written first
        where the UI shows it: the run's description and its name."""
        try:
            self.summarize()
        except Exception as error:  # a summary must not keep the run from ending
            log.warning("could not write the sweep's summary: %s", error)
        self.client.set_terminated(self.run_id, status)

    def summarize(self) -> None:
        """The run's description (`mlflow.note.content`): the result, the winner with one
        standard error of its validation accuracy, the recipe trial and the documented
        baseline; its name: `sweep STUDY: 91.15% (resnet #3 refit)`."""
        run = self.client.get_run(self.run_id)
        metrics, tags = run.data.metrics, run.data.tags
        metric = run.data.params.get("objective", "maximize val_accuracy").split()[-1]
        study = tags.get(names.STUDY, "")
        lines = []
        result = None
        if refit := tags.get(names.REFIT_RUN):
            result, label = metrics.get(names.REFIT_TEST_ACCURACY), refit
            tta = metrics.get(f"refit_{names.TEST_ACCURACY_TTA}")
            lines.append(
                f"**Result**: {result:.2%} test accuracy"
                + (f" ({tta:.2%} with test-time augmentation)" if tta is not None else "")
                + f", `{refit}`: refitted on all training data"
                + (f" ({why})." if (why := tags.get(names.REFIT_CHOICE)) else ".")
            )
        if no_search := tags.get(names.NO_SEARCH):
            lines.append(f"**No search**: {no_search}; the recipe was trained alone.")
        if best := tags.get(names.BEST_RUN):
            value = metrics.get(names.best(metric))
            winner = self.client.get_run(best.rsplit("(", 1)[-1].rstrip(")"))
            n_val = int(winner.data.params.get("val_size", 0) or 0)
            error = (
                f" ± {standard_error(value, n_val):.4f} (one standard error, "
                f"{n_val:,} validation images)"
                if value is not None and n_val and metric.endswith("accuracy")
                else ""
            )
            lines.append(f"**Winner**: `{best}`, {metric} {value:.4f}{error}.")
            if result is None:
                result, label = metrics.get(names.BEST_TEST_ACCURACY), best
                lines.append(f"**Result**: {result:.2%} test accuracy (the winner, no refit).")
        recipes = self.client.search_runs(
            [run.info.experiment_id],
            where({names.PARENT: self.run_id, names.BASELINE: "yes"}),
        )
        for recipe in recipes:
            value = recipe.data.metrics.get(names.best(metric))
            lines.append(
                f"**Recipe trial**: `{recipe.info.run_name}`"
                + (f", {metric} {value:.4f}" if value is not None else "")
                + " (each family's documented recipe runs first)."
            )
        if (documented := metrics.get(names.BASELINE_DOCUMENTED_ACCURACY)) is not None:
            lines.append(
                f"**Documented baseline**: {documented:.2%} ({tags.get(names.BASELINE, '')})."
            )
        if not lines:
            return
        self.client.set_tag(self.run_id, names.DESCRIPTION, "\n\n".join(lines))
        if result is not None:
            name = f"sweep {study}: {result:.2%} ({label.split(' (')[0]})"
            self.client.update_run(self.run_id, name=name)


def _oldest(runs: list[Run]) -> Run | None:
    return min(runs, key=lambda r: (r.info.start_time, r.info.run_id), default=None)
