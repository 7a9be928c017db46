"""Optuna: define-by-run suggestions, a persistent study (SQLite by default), pruning from
per-epoch reports, heartbeats with retry of stale trials, failed trials recorded and skipped.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from sweeper import space
from sweeper.errors import SweeperError

DEFAULT_STORAGE = Path("mlruns") / "optuna.db"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_CONSECUTIVE_FAILURES = 3


class _OverBudget(Exception):
    """Other workers already hold the whole budget: this trial is not run."""


def run(spec, runner, storage: str | None = None) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=spec.study, storage=make_storage(storage), sampler=_sampler(spec),
        pruner=_pruner(spec), direction=spec.direction, load_if_exists=True)
    if existing := len(study.get_trials(deepcopy=False)):
        # A resumed study must not replay the first session's random draws.
        study.sampler = _sampler(spec, seed=spec.seed + existing)
    for family, point in runner.baseline_points.items():
        study.enqueue_trial({"family": family, **{space.qualified(family, k): v
                                                  for k, v in point.items()}},
                            skip_if_exists=True)
    if _finished(study) >= spec.trials:
        print(f"study {spec.study} already has {spec.trials} finished trials; raise "
              "--trials to run more", flush=True)
        return study
    if _target_met(spec, study):
        print(f"study {spec.study} already met its target {spec.metric} {spec.target:g}",
              flush=True)
        return study
    # The budget is shared by every worker on this study: trials running elsewhere count.
    budget = MaxTrialsCallback(spec.trials, states=(*FINISHED, TrialState.RUNNING))
    failures = _StopAfterFailures()
    deadline = time.time() + spec.timeout_minutes * 60 if spec.timeout_minutes else None
    while True:
        study.optimize(
            lambda trial: _objective(trial, spec, runner, study),
            timeout=max(1.0, deadline - time.time()) if deadline else None,
            catch=(Exception,),  # a failed trial is recorded as FAIL and the sweep goes on
            callbacks=[budget, failures, _StopAtTarget(spec)], gc_after_trial=True)
        if failures.tripped or (deadline and time.time() >= deadline):
            return study
        if not _wait_for_others(study, spec):
            return study


def _wait_for_others(study, spec) -> bool:
    """Stays while other workers' trials run, so one that dies is retried here.

    Returns True when there is work again (a retried trial, or budget left), False when the
    budget is finished or the target met."""
    while _finished(study) < spec.trials and not _target_met(spec, study):
        optuna.storages.fail_stale_trials(study)
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return True
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if _finished(study) + len(running) < spec.trials:
            return True
        time.sleep(_beat())
    return False


def _beat() -> int:
    return int(os.environ.get("SWEEPER_HEARTBEAT_SECONDS", "30"))


def make_storage(url: str | None):
    """An RDB storage with heartbeats, so a dead worker's trial is failed and retried.

    $SWEEPER_HEARTBEAT_SECONDS sets the beat (default 30 s); a trial silent for four beats
    is stale: another worker marks it failed, ends its MLflow run and queues it again."""
    if url is None:
        DEFAULT_STORAGE.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{DEFAULT_STORAGE.resolve()}"
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    beat = _beat()
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are experimental; we rely on them
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=beat,
                                  grace_period=beat * 4,
                                  heartbeat_stale_trial_callback=_StaleTrial())
        except sqlalchemy.exc.DBAPIError:
            # Workers starting together on a fresh database race to create its tables;
            # the loser finds them made on the next try.
            if attempt == 4:
                raise
            time.sleep(1 + attempt)


class _StaleTrial:
    """A trial whose worker died: Optuna queues it again; its MLflow run ends as failed."""

    def __init__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=1)

    def __call__(self, study, trial):
        self.retry(study, trial)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            from sweeper import tracking

            tracking.end_lost_run(run_id, trial.user_attrs.get("worker", "?"))


def suggest(trial: optuna.Trial, name: str, param: space.Param):
    if isinstance(param, space.Int):
        return trial.suggest_int(name, param.low, param.high, step=param.step, log=param.log)
    if isinstance(param, space.Float):
        return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)
    if isinstance(param, space.Choice):
        return trial.suggest_categorical(name, list(param.values))
    raise TypeError(f"fixed parameters are not suggested: {name}")


def _objective(trial: optuna.Trial, spec, runner, study) -> float:
    if _taken_before(study, trial) >= spec.trials:
        study.stop()
        trial.set_user_attr("skipped", "the budget was reached by other workers")
        raise _OverBudget(f"trial {trial.number} is over the budget of {spec.trials}")
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    family = trial.suggest_categorical("family", list(spec.families))
    params = {name: suggest(trial, space.qualified(family, name), p)
              for name, p in spec.families[family].items() if not isinstance(p, space.Fixed)}

    def report(epoch: int, value: float) -> bool:
        trial.report(value, epoch)
        return trial.should_prune()

    outcome = runner.run(trial.number, family, params, report=report,
                         position=_finished(study) + 1,
                         on_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id))
    if outcome.pruned:
        raise optuna.TrialPruned()
    return outcome.value


def _finished(study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _taken_before(study, trial) -> int:
    """Trials numbered before this one that finished or are running: the budget they hold."""
    held = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    return sum(t.number < trial.number for t in held)


def _target_met(spec, study) -> bool:
    """Whether a completed trial of the study, any worker's, met the sweep's target."""
    if spec.target is None:
        return False
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return any(spec.reached(t.value) for t in done)


class _StopAtTarget:
    """Stops the study once a trial meets the target (`budget.target`)."""

    def __init__(self, spec):
        self.spec = spec

    def __call__(self, study, trial):
        if _target_met(self.spec, study):
            study.stop()


class _StopAfterFailures:
    """Stops the study after several failures in a row: then something is wrong with all."""

    def __init__(self, limit: int = MAX_CONSECUTIVE_FAILURES):
        self.limit, self.count = limit, 0
        self.tripped = False

    def __call__(self, study, trial):
        if trial.user_attrs.get("skipped"):
            return
        self.count = self.count + 1 if trial.state == TrialState.FAIL else 0
        if self.count >= self.limit:
            self.tripped = True
            study.stop()
            print(f"stopping: {self.count} trials failed in a row", flush=True)


def _sampler(spec, seed=None):
    seed = spec.seed if seed is None else seed
    if spec.sampler == "tpe":
        # Small budgets: start modelling after a third of the trials, not Optuna's fixed 10.
        return optuna.samplers.TPESampler(seed=seed,
                                          n_startup_trials=max(3, min(10, spec.trials // 3)))
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if spec.sampler == "gp":
        try:
            import torch  # noqa: F401  (GPSampler's requirement)
        except ImportError:
            raise SweeperError("sampler gp needs PyTorch: pip install torch") from None
        return optuna.samplers.GPSampler(seed=seed)
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(spec.families), seed=seed)
    raise SweeperError(f"Unknown optuna sampler {spec.sampler!r}")


def _pruner(spec):
    if spec.pruner == "median":
        # First epochs are noisy: judge from epoch 3, against at least 3 finished trials.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=2, max_resource=spec.max_epochs,
                                              reduction_factor=3)
    if spec.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)
    return optuna.pruners.NopPruner()
