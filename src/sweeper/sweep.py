"""The sweep driver: load the data once, open the sweep's parent run, hand the engine a
`SweepRun`, and run each trial it proposes as a child run.

Engines see only the contract in `engines.base`; whichever engine ran, the MLflow runs look
the same. The policy (budget, timeout, target, failures in a row, recipes first) is
`policy.Policy`, applied here and asked by the engines.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from sweeper import baselines, data, engines, policy, runner, schema, space, tracking
from sweeper.config import SweepSpec
from sweeper.engines.base import COMPLETE, PRUNED, Engine, Outcome, PastTrial, Report
from sweeper.errors import SweeperError
from sweeper.tracking import names

log = logging.getLogger(__name__)


class SweepRun:
    """One session of a sweep: what an engine gets (`engines.base.Sweep`). Runs each trial as
    a child run of the parent and keeps the parent's best-so-far current."""

    def __init__(
        self,
        spec: SweepSpec,
        dataset: data.Dataset,
        experiment: str,
        parent: tracking.ParentRun,
        engine: Engine,
    ):
        self.spec, self.dataset, self.experiment = spec, dataset, experiment
        self.parent, self.engine = parent, engine
        self.policy = policy.Policy(spec)
        self.first_points = policy.first_points(spec)
        self.started = time.perf_counter()
        self.best_number: int | None = None  # the trial the parent names as best

    def stop_reason(self, trials: Sequence[PastTrial], *, holding: bool = False) -> str | None:
        return self.policy.stop_reason(trials, holding=holding)

    def seconds_left(self) -> float | None:
        return self.policy.seconds_left()

    def run_trial(
        self,
        number: int,
        family: str,
        params: dict,
        *,
        report: Report | None = None,
        epochs: int | None = None,
        on_start: Callable[[str], None] | None = None,
    ) -> Outcome:
        spec = self.spec
        is_baseline = (family, params) in self.first_points
        label = f"{family} #{number}"
        position = policy.finished(self.engine.trials()) + 1
        log.info(
            "trial %d/%d: %s%s %s",
            position,
            spec.trials,
            label,
            " (baseline)" if is_baseline else "",
            _short(params),
        )
        should_prune = None
        if report:
            should_prune = lambda epoch, logs: report(epoch + 1, logs.get(spec.metric, math.nan))  # noqa: E731
        tags = {
            names.KIND: names.KIND_TRIAL,
            names.TRIAL_NUMBER: number,
            names.ENGINE: spec.engine,
            names.STUDY: spec.study,
            names.BASELINE: "yes" if is_baseline else "no",
        }
        try:
            result, run = runner.tracked_trial(
                family,
                {**_fixed(spec.families[family]), **params},
                self.dataset,
                experiment=self.experiment,
                run_name=label,
                epochs=epochs or spec.max_epochs,
                seed=spec.seed + number,
                tags=tags,
                parent_run_id=self.parent.run_id,
                should_prune=should_prune,
                precision=spec.precision,
                stop_when=lambda logs: self.policy.stop_after_epoch(
                    logs.get(spec.metric, math.nan)
                ),
                on_start=on_start,
            )
        except Exception as error:
            self.policy.record(failed=True)
            log.info("  %s failed: %s: %s", label, type(error).__name__, error)
            raise
        self.policy.record(failed=False)
        value = result.best(spec.metric, spec.direction)
        self._record(number, label, run.run_id, value, result)
        return Outcome(value, result.pruned)

    def _record(self, number, label, run_id, value, result):
        state = names.PRUNED if result.pruned else names.COMPLETE
        latest = PastTrial(number, PRUNED if result.pruned else COMPLETE, value)
        best = self.update_best([latest])
        elapsed = time.perf_counter() - self.started
        log.info(
            "  %s %s: %s=%.4f test_accuracy=%.4f; best so far %.4f (%.1f min)",
            label,
            state,
            self.spec.metric,
            value,
            result.test[names.TEST_ACCURACY],
            best.value if best and best.value is not None else value,
            elapsed / 60,
        )
        if not result.pruned and self.spec.reached(value):
            self._note(self.parent.log_target_reached, elapsed, number, f"{label} ({run_id})")
            log.info(
                "target %s %g reached by %s after %.1f min; stopping the sweep",
                self.spec.metric,
                self.spec.target,
                label,
                elapsed / 60,
            )

    def update_best(self, latest: Sequence[PastTrial] = ()) -> PastTrial | None:
        """Names on the parent the best completed trial of the whole study, any worker's
        (`latest`: trials finished here that the engine has not recorded yet)."""
        recorded = {t.number: t for t in self.engine.trials()}
        best = policy.best([*recorded.values(), *latest], self.spec.direction)
        if best is None or best.number == self.best_number:
            return best
        run = tracking.trial_of(self.parent.run_id, best.number)
        if run is None:  # its worker is still writing it; a later update names it
            return best
        test_accuracy = run.data.metrics.get(names.TEST_ACCURACY, math.nan)
        label = f"{run.info.run_name} ({run.info.run_id})"
        if self._note(
            self.parent.log_best, self.spec.metric, best.value, test_accuracy, best.number, label
        ):
            self.best_number = best.number
        return best

    def _note(self, write: Callable[..., None], *args: object) -> bool:
        """Writes to the parent run; a failure there (a store busy with other workers, say)
        must not fail a trial whose own run is complete. The next update writes again."""
        try:
            write(*args)
        except tracking.TrackingError as error:
            log.warning("could not update the sweep's parent run: %s", error)
            return False
        return True


def run_sweep(
    spec: SweepSpec,
    *,
    storage: str | None = None,
    data_dir: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Runs the sweep to its budget (or resumes it); returns the parent run id."""
    dataset = _load(spec, data_dir, spec.limit)
    tracking.configure(tracking_uri)
    experiment = tracking.experiment_id(dataset.name)
    parent = _open_parent(spec, dataset, experiment)
    status = "FAILED"
    try:
        engine = engines.get(spec.engine)(spec, storage)
        sweep = SweepRun(spec, dataset, experiment, parent, engine)
        if reason := sweep.stop_reason(engine.trials()):
            log.info("study %s already %s", spec.study, reason)
        else:
            engine.search(sweep)
        sweep.update_best()  # other workers may have finished after this one's last trial
        if spec.refit_epochs:  # on all the training data: no `data.limit`
            refit(spec, _load(spec, data_dir, None), experiment, parent, engine.trials())
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        parent.end(status)
    return parent.run_id


def _load(spec: SweepSpec, data_dir: str | None, limit: int | None) -> data.Dataset:
    return data.load(
        spec.dataset,
        data_dir=data_dir,
        limit=limit,
        val_fraction=spec.val_fraction,
        seed=spec.seed,
        image_size=spec.image_size,
    )


def refit(
    spec: SweepSpec,
    dataset: data.Dataset,
    experiment: str,
    parent: tracking.ParentRun,
    trials: Sequence[PastTrial],
) -> tracking.TrialRun | None:
    """Retrains the best completed trial (chosen on validation) on all of `dataset`'s
    training and validation data (no `data.limit`) for `spec.refit_epochs`, as a child run
    tagged `refit_of` its trial: the long run of a search made of short ones. Its test
    accuracy is measured once, after the choice; a sweep resumed later refits only a new best.
    """
    best = policy.best(trials, spec.direction)
    if best is None or not spec.refit_epochs:
        return None
    trial = tracking.trial_of(parent.run_id, best.number)
    if trial is None:
        return None
    if tracking.search_runs(
        {
            names.KIND: names.KIND_REFIT,
            names.REFIT_OF: trial.info.run_id,
            names.STATE: names.COMPLETE,
        }
    ):
        log.info("refit: %s is refitted already", trial.info.run_name)
        return None
    family = trial.data.params["family"]
    params = {
        k: schema.from_text(family, k, v)
        for k, v in trial.data.params.items()
        if k in schema.params_of(family)
    }
    params["early_stopping_patience"] = 0  # nothing to watch: validation is trained on
    label = f"{trial.info.run_name} refit"
    log.info(
        "refit: %s (%s %.4f) on training + validation data, %d epochs",
        label,
        spec.metric,
        best.value,
        spec.refit_epochs,
    )
    tags = {
        names.KIND: names.KIND_REFIT,
        names.REFIT_OF: trial.info.run_id,
        names.TRIAL_NUMBER: best.number,
        names.ENGINE: spec.engine,
        names.STUDY: spec.study,
    }
    result, run = runner.tracked_trial(
        family,
        params,
        dataset.merged(),
        experiment=experiment,
        run_name=label,
        epochs=spec.refit_epochs,
        seed=spec.seed + best.number,
        tags=tags,
        parent_run_id=parent.run_id,
        precision=spec.precision,
    )
    parent.log_refit(result.test, f"{label} ({run.run_id})")
    log.info(
        "  %s complete: test_accuracy=%.4f%s",
        label,
        result.test[names.TEST_ACCURACY],
        f" (flip TTA {result.test[names.TEST_ACCURACY_TTA]:.4f})"
        if names.TEST_ACCURACY_TTA in result.test
        else "",
    )
    return run


def _open_parent(spec: SweepSpec, dataset: data.Dataset, experiment: str) -> tracking.ParentRun:
    recipe = baselines.for_family(next(iter(spec.families)), spec.dataset)
    tags = {names.ENGINE: spec.engine, names.DATASET: data.display_name(spec.dataset)}
    if recipe:
        tags[names.BASELINE] = recipe.name
    params = {
        "dataset": spec.dataset,
        "engine": spec.engine,
        "sampler": spec.sampler,
        "pruner": spec.pruner,
        "objective": f"{spec.direction} {spec.metric}",
        "trials": spec.trials,
        "timeout_minutes": spec.timeout_minutes,
        "max_epochs": spec.max_epochs,
        "seed": spec.seed,
        "study": spec.study,
        "families": ",".join(spec.families),
        "precision": spec.precision,
        "target": spec.target,
        "baseline_first": spec.baseline_first,
        "skipped_images": dataset.skipped_images,
    }
    documented = [
        b.documented_accuracy
        for b in baselines.BASELINES.values()
        if b.dataset == spec.dataset and b.documented_accuracy
    ]
    metrics = {names.BASELINE_DOCUMENTED_ACCURACY: max(documented)} if documented else {}
    return tracking.ParentRun.open(
        experiment, spec.study, tags=tags, params=params, sweep_file=spec.text, metrics=metrics
    )


def run_workers(spec: SweepSpec, workers: int, *, storage: str | None, argv: list[str]) -> int:
    """Starts `workers` copies of this sweep command on one study, each with its share of the
    CPU threads; Optuna's storage hands out the trials. Returns the worst exit code."""
    if spec.engine != "optuna":
        raise SweeperError(
            "--workers runs the optuna engine; keras-tuner has its own "
            "distributed mode (KERASTUNER_* variables)"
        )
    if not storage or storage.startswith("sqlite"):
        raise SweeperError(
            "--workers needs a storage several processes can share: "
            "--storage postgresql://... (SQLite is not safe for that)"
        )
    threads = max(1, (os.cpu_count() or 1) // workers)
    command = [
        sys.executable,
        "-m",
        "sweeper.cli",
        *_without_workers(argv),
        "--threads",
        str(threads),
        "--storage",
        storage,
    ]
    log.info("starting %d workers with %d thread(s) each", workers, threads)
    processes = [subprocess.Popen(command) for _ in range(workers)]
    try:
        return max(p.wait() for p in processes)
    except KeyboardInterrupt:
        for p in processes:
            p.wait()
        raise


def _without_workers(argv: list[str]) -> list[str]:
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


def _fixed(params: dict) -> dict:
    return {k: p.value for k, p in params.items() if isinstance(p, space.Fixed)}


def _short(params: dict) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )
