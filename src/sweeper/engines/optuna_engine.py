"""Optuna: define-by-run suggestions, a persistent study (SQLite by default), pruning from
per-epoch reports, heartbeats with retry of stale trials, failed trials recorded and skipped.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from sweeper import space
from sweeper.errors import SweeperError

DEFAULT_STORAGE = Path("mlruns") / "optuna.db"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_CONSECUTIVE_FAILURES = 3
HEARTBEAT_SECONDS = 30


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
    study.optimize(
        lambda trial: _objective(trial, spec, runner, study),
        timeout=spec.timeout_minutes * 60 if spec.timeout_minutes else None,
        catch=(Exception,),  # a failed trial is recorded as FAIL and the sweep goes on
        callbacks=[MaxTrialsCallback(spec.trials, states=FINISHED), _StopAfterFailures()],
        gc_after_trial=True)
    return study


def make_storage(url: str | None):
    """An RDB storage with heartbeats, so a dead worker's trial is failed and retried."""
    if url is None:
        DEFAULT_STORAGE.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{DEFAULT_STORAGE.resolve()}"
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():  # heartbeats are marked experimental; we rely on them
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=HEARTBEAT_SECONDS * 4,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))


def suggest(trial: optuna.Trial, name: str, param: space.Param):
    if isinstance(param, space.Int):
        return trial.suggest_int(name, param.low, param.high, step=param.step, log=param.log)
    if isinstance(param, space.Float):
        return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)
    if isinstance(param, space.Choice):
        return trial.suggest_categorical(name, list(param.values))
    raise TypeError(f"fixed parameters are not suggested: {name}")


def _objective(trial: optuna.Trial, spec, runner, study) -> float:
    family = trial.suggest_categorical("family", list(spec.families))
    params = {name: suggest(trial, space.qualified(family, name), p)
              for name, p in spec.families[family].items() if not isinstance(p, space.Fixed)}

    def report(epoch: int, value: float) -> bool:
        trial.report(value, epoch)
        return trial.should_prune()

    outcome = runner.run(trial.number, family, params, report=report,
                         position=_finished(study) + 1)
    if outcome.pruned:
        raise optuna.TrialPruned()
    return outcome.value


def _finished(study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


class _StopAfterFailures:
    """Stops the study after several failures in a row: then something is wrong with all."""

    def __init__(self, limit: int = MAX_CONSECUTIVE_FAILURES):
        self.limit, self.count = limit, 0

    def __call__(self, study, trial):
        self.count = self.count + 1 if trial.state == TrialState.FAIL else 0
        if self.count >= self.limit:
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
