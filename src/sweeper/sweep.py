"""The sweep driver: load the data once, open the sweep's parent run, let the engine propose
trials, and run each through `TrialRunner` as a child run.

Engines see only `TrialRunner.run(number, family, params, report)`; whichever engine ran,
the MLflow runs look the same.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from sweeper import baselines, data, engines, runner, space, tracking, train
from sweeper.config import SweepSpec
from sweeper.errors import SweeperError


@dataclass
class Outcome:
    value: float
    pruned: bool


class TrialRunner:
    """Runs one proposed trial as a child run and keeps the parent's best-so-far current."""

    def __init__(self, spec: SweepSpec, dataset: data.Dataset, experiment: str,
                 parent_run_id: str, client: MlflowClient | None = None):
        self.spec, self.dataset, self.experiment = spec, dataset, experiment
        self.parent_run_id = parent_run_id
        self.client = client or MlflowClient()
        self.baseline_points = baseline_points(spec)
        self.started = time.perf_counter()
        self.deadline = (time.time() + spec.timeout_minutes * 60 if spec.timeout_minutes
                         else None)
        metrics = self.client.get_run(parent_run_id).data.metrics
        self.best_value = metrics.get(f"best_{spec.metric}", math.nan)

    def out_of_time(self) -> bool:
        """Whether the sweep's timeout has passed: start no trial, end the running one."""
        return self.deadline is not None and time.time() > self.deadline

    def _stop_when(self, logs: dict) -> bool:
        """After an epoch: stop the trial once the sweep's deadline passed or its target is
        met (that trial then completes with the value that met it)."""
        return self.out_of_time() or self.spec.reached(logs.get(self.spec.metric, math.nan))

    def run(self, number: int, family: str, params: dict, report=None, epochs=None,
            position: int | None = None, on_start=None) -> Outcome:
        """Trains trial `number`; `report(epoch, value) -> bool` asks whether to prune."""
        spec = self.spec
        is_baseline = params == self.baseline_points.get(family)
        label = f"{family} #{number}"
        where = f"{position}/{spec.trials}" if position else f"#{number}"
        print(f"trial {where}: {label}{' (baseline)' if is_baseline else ''} "
              f"{_short(params)}", flush=True)
        should_prune = None
        if report:
            should_prune = lambda epoch, logs: report(epoch + 1, logs.get(spec.metric, math.nan))  # noqa: E731
        tags = {"kind": "trial", "trial_number": number, "engine": spec.engine,
                "study": spec.study, "baseline": "yes" if is_baseline else "no"}
        try:
            result, run = runner.tracked_trial(
                family, {**_fixed(spec.families[family]), **params}, self.dataset,
                experiment=self.experiment, run_name=label, epochs=epochs or spec.max_epochs,
                seed=spec.seed + number, tags=tags, parent_run_id=self.parent_run_id,
                should_prune=should_prune, precision=spec.precision, stop_when=self._stop_when,
                on_start=on_start)
        except BaseException as error:
            print(f"  {label} failed: {type(error).__name__}: {error}", flush=True)
            raise
        value = result.best(spec.metric, spec.direction)
        self._record(number, label, run.run_id, value, result)
        return Outcome(value, result.pruned)

    def _record(self, number, label, run_id, value, result):
        better = (value > self.best_value if self.spec.direction == "maximize"
                  else value < self.best_value)
        state = "pruned" if result.pruned else "complete"
        if not result.pruned and (math.isnan(self.best_value) or better):
            self.best_value = value
            now = int(time.time() * 1000)
            self.client.log_batch(self.parent_run_id, metrics=[
                Metric(f"best_{self.spec.metric}", value, now, number),
                Metric("best_test_accuracy", result.test["test_accuracy"], now, number)])
            self.client.set_tag(self.parent_run_id, "best_run", f"{label} ({run_id})")
        elapsed = time.perf_counter() - self.started
        print(f"  {label} {state}: {self.spec.metric}={value:.4f} "
              f"test_accuracy={result.test['test_accuracy']:.4f}; best so far "
              f"{self.best_value:.4f} ({elapsed / 60:.1f} min)", flush=True)
        if not result.pruned and self.spec.reached(value):
            self.client.log_metric(self.parent_run_id, "target_reached_seconds", elapsed,
                                   step=number)
            self.client.set_tag(self.parent_run_id, "target_reached_by", f"{label} ({run_id})")
            print(f"target {self.spec.metric} {self.spec.target:g} reached by {label} after "
                  f"{elapsed / 60:.1f} min; stopping the sweep", flush=True)


def baseline_points(spec: SweepSpec) -> dict[str, dict]:
    """Each family's documented recipe as a point of its space, where the space holds it
    (none when the sweep file says `baseline_first: false`)."""
    points = {}
    if not spec.baseline_first:
        return points
    for family, params in spec.families.items():
        recipe = baselines.for_family(family, spec.dataset)
        if recipe is None:
            continue
        point = space.baseline_point(params, recipe.params, train.defaults(family))
        if point is not None:
            points[family] = point
    return points


def run_sweep(spec: SweepSpec, *, storage: str | None = None, data_dir=None,
              tracking_uri: str | None = None) -> str:
    """Runs the sweep to its budget (or resumes it); returns the parent run id."""
    dataset = data.load(spec.dataset, data_dir=data_dir, limit=spec.limit,
                        val_fraction=spec.val_fraction, seed=spec.seed,
                        image_size=spec.image_size)
    tracking.configure(tracking_uri)
    experiment = tracking.experiment_id(dataset.name)
    client = MlflowClient()
    parent = open_parent_run(spec, experiment, client)
    status = "FAILED"
    try:
        trial_runner = TrialRunner(spec, dataset, experiment, parent, client)
        engines.get(spec.engine).run(spec, trial_runner, storage=storage)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(parent, status)
    return parent


def run_workers(spec: SweepSpec, workers: int, *, storage: str | None, argv: list[str]) -> int:
    """Starts `workers` copies of this sweep command on one study, each with its share of the
    CPU threads; Optuna's storage hands out the trials. Returns the worst exit code."""
    if spec.engine != "optuna":
        raise SweeperError("--workers runs the optuna engine; keras-tuner has its own "
                           "distributed mode (KERASTUNER_* variables)")
    if not storage or storage.startswith("sqlite"):
        raise SweeperError("--workers needs a storage several processes can share: "
                           "--storage postgresql://... (SQLite is not safe for that)")
    threads = max(1, (os.cpu_count() or 1) // workers)
    command = [sys.executable, "-m", "sweeper.cli", *_without_workers(argv),
               "--threads", str(threads), "--storage", storage]
    print(f"starting {workers} workers with {threads} thread(s) each", flush=True)
    processes = [subprocess.Popen(command) for _ in range(workers)]
    try:
        return max(p.wait() for p in processes)
    except KeyboardInterrupt:
        for p in processes:
            p.wait()
        raise


def _without_workers(argv):
    """The command line minus --workers, --threads and --storage (given again explicitly)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--workers", "--threads", "--storage"):
            skip = "=" not in arg
            continue
        kept.append(arg)
    return kept


def open_parent_run(spec: SweepSpec, experiment: str, client: MlflowClient) -> str:
    """The sweep's one parent run: found by its study tag when resuming, else created.

    Workers starting together may each create one; all then settle on the oldest and the
    others delete their own, so the sweep keeps a single parent.
    """
    query = f"tags.kind = 'sweep' and tags.study = '{spec.study}'"
    existing = _oldest(client.search_runs([experiment], query))
    if existing is None:
        mine = _create_parent(spec, experiment, client)
        existing = _oldest(client.search_runs([experiment], query))
        if existing.info.run_id != mine:
            client.delete_run(mine)
    client.update_run(existing.info.run_id, status="RUNNING")
    return existing.info.run_id


def _oldest(runs):
    return min(runs, key=lambda r: (r.info.start_time, r.info.run_id), default=None)


def _create_parent(spec, experiment, client) -> str:
    recipe = baselines.for_family(next(iter(spec.families)), spec.dataset)
    run = client.create_run(experiment, run_name=f"sweep {spec.study}", tags={
        "kind": "sweep", "study": spec.study, "engine": spec.engine,
        "dataset": data.display_name(spec.dataset)})
    params = {"dataset": spec.dataset, "engine": spec.engine, "sampler": spec.sampler,
              "pruner": spec.pruner, "objective": f"{spec.direction} {spec.metric}",
              "trials": spec.trials, "timeout_minutes": spec.timeout_minutes,
              "max_epochs": spec.max_epochs, "seed": spec.seed, "study": spec.study,
              "families": ",".join(spec.families), "precision": spec.precision,
              "target": spec.target, "baseline_first": spec.baseline_first}
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    client.log_text(run.info.run_id, spec.text, "sweep.yaml")
    documented = [b.documented_accuracy for b in baselines.BASELINES.values()
                  if b.dataset == spec.dataset and b.documented_accuracy]
    if documented:
        client.log_metric(run.info.run_id, "baseline_documented_accuracy", max(documented))
    if recipe:
        client.set_tag(run.info.run_id, "baseline", recipe.name)
    return run.info.run_id


def _fixed(params: dict) -> dict:
    return {k: p.value for k, p in params.items() if isinstance(p, space.Fixed)}


def _short(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items())
