"""Optuna: define-by-run suggestions, a persistent study, pruning from per-epoch reports,
failed trials recorded and skipped, lost trials (their worker died) failed and run again.

Stores: by default a JournalStorage file under `mlruns/` (several worker processes of one
machine share it safely; SQLite is not made for that); PostgreSQL (or any RDB URL) for many
machines, with heartbeats so a dead machine's trial is failed and retried too.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import TrialState

from sweeper import data, policy, space
from sweeper.config import SweepSpec
from sweeper.engines import base
from sweeper.errors import SweeperError

log = logging.getLogger(__name__)
DEFAULT_STORAGE = Path("mlruns") / "optuna.journal"
EARLIER_STORAGE = Path("mlruns") / "optuna.db"  # the default before the journal
DATASET_ATTR = "dataset"  # a study's user attribute: the identity of its dataset
STATES = {
    TrialState.WAITING: base.WAITING,
    TrialState.RUNNING: base.RUNNING,
    TrialState.COMPLETE: base.COMPLETE,
    TrialState.PRUNED: base.PRUNED,
    TrialState.FAIL: base.FAILED,
}


class _OverBudget(Exception):
    """Other workers already hold the whole budget: this trial is not run."""


class Engine(base.Engine):
    def __init__(self, spec: SweepSpec, storage: str | None = None):
        super().__init__(spec, storage)
        # Optuna's INFO lines repeat sweeper's, its warnings a failed trial's traceback (kept
        # in the trial's run): shown with -v only. Set here: Optuna's first import resets
        # its logger's level, which the CLI set before.
        verbose = logging.getLogger("sweeper").isEnabledFor(logging.DEBUG)
        optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.ERROR)
        self.store = make_storage(storage)
        self.study = optuna.create_study(
            study_name=spec.study,
            storage=self.store,
            sampler=_sampler(spec),
            pruner=_pruner(spec),
            directions=[StudyDirection[d.upper()] for _, d in spec.objectives],
            load_if_exists=True,
        )
        self._bind_to_dataset()
        self.recover_lost()  # a worker killed before this start left its trial running
        if existing := len(self.study.get_trials(deepcopy=False)):
            # A resumed study must not replay the first session's random draws.
            self.study.sampler = _sampler(spec, seed=spec.seed + existing)

    def _bind_to_dataset(self) -> None:
        """A study holds one dataset's trials: a study name reused on another dataset is
        refused, not merged into it."""
        dataset = data.identity(self.spec.dataset)
        bound = self.study.user_attrs.get(DATASET_ATTR)
        if bound is None:
            self.study.set_user_attr(DATASET_ATTR, dataset)
        elif bound != dataset:
            raise SweeperError(
                f"study {self.spec.study!r} belongs to dataset {bound}, not {dataset}: give "
                "this sweep another study name (study: in the sweep file)"
            )

    def warm_start_points(
        self, queued: Sequence[tuple[str, dict]] = ()
    ) -> list[tuple[str, dict, str]]:
        """The best configurations of earlier studies of the same dataset in this store
        (`spec.warm_start`: all of them, or the one named), best first, that this sweep's
        space holds and `queued` (the recipes) lacks: (family, params, where from). At most a
        quarter of the budget (1-3)."""
        chosen = self.spec.warm_start
        if chosen == "none":
            return []
        dataset = data.identity(self.spec.dataset)
        found = []
        for summary in optuna.get_all_study_summaries(self.store, include_best_trial=False):
            name = summary.study_name
            if name == self.spec.study or chosen not in ("all", name):
                continue
            if summary.user_attrs.get(DATASET_ATTR) != dataset:
                if chosen == name:
                    raise SweeperError(
                        f"warm_start: study {name!r} is not of dataset {dataset} "
                        f"({summary.user_attrs.get(DATASET_ATTR, 'its dataset is not known')})"
                    )
                continue
            if summary.directions != self.study.directions:  # another objective's values
                continue
            earlier = optuna.load_study(study_name=name, storage=self.store)
            for trial in earlier.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                point = self._in_space(trial.params)
                if point is not None and trial.value is not None:
                    found.append((trial.value, *point, f"{name} #{trial.number}"))
        if chosen != "all" and not any(where.startswith(f"{chosen} #") for *_, where in found):
            log.info("warm start: study %r has no complete trial this space holds", chosen)
        sign = 1 if self.spec.direction == "maximize" else -1
        found.sort(key=lambda f: -sign * f[0])
        points, seen = [], list(queued)  # an earlier best that was a recipe runs as one
        for _, family, params, where in found:
            if (family, params) not in seen:
                seen.append((family, params))
                points.append((family, params, where))
        return points[: max(1, min(3, self.spec.trials // 4))]

    def _in_space(self, params: dict) -> tuple[str, dict] | None:
        """An earlier trial's family and the values of this space's searched parameters,
        where each it has lies in this space (one it lacks is sampled)."""
        family = params.get("family")
        if family not in self.spec.families:
            return None
        point = {}
        for name, param in self.spec.families[family].items():
            key = space.qualified(family, name)
            if isinstance(param, space.Fixed) or key not in params:
                continue
            if not param.contains(params[key]):
                return None
            point[name] = params[key]
        return family, point

    def trials(self) -> list[base.PastTrial]:
        return [
            base.PastTrial(
                t.number,
                STATES[t.state],
                t.values[0] if t.values else None,
                t.state != TrialState.COMPLETE
                or all(e <= 0 for e in policy.excess(t.user_attrs, self.spec.constraints)),
                str(t.params.get("family", "")),
            )
            for t in self.study.get_trials(deepcopy=False)
        ]

    def front(self) -> list[int]:
        """Optuna's own front (`best_trials`: the feasible ones' with constraints)."""
        if len(self.spec.objectives) < 2:
            return []
        return sorted(t.number for t in self.study.best_trials)

    def recover_lost(self) -> list[int]:
        """Fails each running trial whose worker process on this machine is gone (killed with
        -9, say), ends its MLflow run and queues it again once; returns their numbers.
        Trials of other machines are failed by the RDB storage's heartbeats."""
        host, lost = socket.gethostname(), []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker_host, _, pid = trial.user_attrs.get("worker", "").rpartition(":")
            if worker_host != host or not pid.isdigit() or _alive(int(pid)):
                continue
            try:
                self.study.tell(trial.number, state=TrialState.FAIL)
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # another process failed it first
            _LostTrial(f"worker {trial.user_attrs['worker']} is gone")(
                self.study, self.study.trials[trial.number]
            )
            lost.append(trial.number)
        return lost

    def search(self, sweep: base.Sweep) -> None:
        fresh = not self.study.get_trials(deepcopy=False)
        for family, point in sweep.first_points:
            self._enqueue(family, point)
        if fresh:  # a resumed study started from its earlier studies already
            for family, point, where in self.warm_start_points(sweep.first_points):
                log.info("warm start: %s's %s queued after the recipes", where, family)
                self._enqueue(family, point)

        def stop(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            # Trials running on other workers hold budget too.
            trials = self.trials()  # one read of the store for both questions
            if sweep.stop_reason(trials, holding=True):
                study.stop()
            self._narrow(sweep, trials)

        self._narrow(sweep, self.trials())  # a resumed study may have decided already

        while True:
            self.study.optimize(
                lambda trial: self._objective(trial, sweep),
                timeout=sweep.seconds_left(),
                catch=(Exception,),  # a failed trial is recorded as FAIL and the sweep goes on
                callbacks=[stop],
                gc_after_trial=True,
            )
            if sweep.stop_reason(self.trials()) or not self._wait_for_others(sweep):
                return

    def _narrow(self, sweep: base.Sweep, trials: list[base.PastTrial]) -> None:
        """Samples only the family the sweep keeps, once the others cannot compete (Optuna's
        PartialFixedSampler; queued trials still run as queued)."""
        if isinstance(self.study.sampler, optuna.samplers.PartialFixedSampler):
            return
        if family := sweep.family_to_keep(trials):
            with warnings.catch_warnings():  # experimental; the log line says what happened
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.sampler = optuna.samplers.PartialFixedSampler(
                    {"family": family}, self.study.sampler
                )

    def claim_refit(self, number: int) -> bool:
        """Atomic in any storage: creating a study whose name another process created
        first fails (a unique name in an RDB, the journal's order in a file), so of the
        workers that finish together exactly one refits."""
        try:
            claim = optuna.create_study(
                study_name=f"{self.spec.study}.refit-of-{number}", storage=self.store
            )
        except optuna.exceptions.DuplicatedStudyError:
            return False
        claim.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        return True

    def _enqueue(self, family: str, point: dict) -> None:
        self.study.enqueue_trial(
            {"family": family, **{space.qualified(family, k): v for k, v in point.items()}},
            skip_if_exists=True,
        )

    @classmethod
    def importances(cls, study: str, storage: str | None = None) -> dict[str, dict[str, float]]:
        """fANOVA importances of each family's parameters, from its completed trials."""
        if storage is None and not (DEFAULT_STORAGE.exists() or EARLIER_STORAGE.exists()):
            return {}
        try:
            loaded = optuna.load_study(study_name=study, storage=make_storage(storage))
        except KeyError:
            return {}
        trials = loaded.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        found = {}
        for family in dict.fromkeys(str(t.params.get("family")) for t in trials):
            params = sorted({p for t in trials for p in t.params if p.startswith(f"{family}.")})
            done = [t for t in trials if all(p in t.params for p in params)]
            if len(done) >= 3 and params:
                found[family] = optuna.importance.get_param_importances(loaded, params=params)
        return found

    def _objective(self, trial: optuna.Trial, sweep: base.Sweep) -> float | tuple[float, ...]:
        if sweep.stop_reason(self.trials()) or self._over_budget(trial, sweep):
            self.study.stop()
            trial.set_user_attr("skipped", "the budget was reached by other workers")
            raise _OverBudget(f"trial {trial.number} is over the budget of {self.spec.trials}")
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        family = trial.suggest_categorical("family", list(self.spec.families))
        params = {
            name: suggest(trial, space.qualified(family, name), p)
            for name, p in self.spec.families[family].items()
            if not isinstance(p, space.Fixed)
        }

        def report(epoch: int, value: float) -> bool:
            trial.report(value, epoch)
            return trial.should_prune()

        try:
            outcome = sweep.run_trial(
                trial.number,
                family,
                params,
                report=report if len(self.spec.objectives) == 1 else None,  # Optuna prunes one
                on_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
            )
        except base.NotStarted as late:  # FAIL, which samplers ignore; not a trial that ran
            self.study.stop()
            trial.set_user_attr("skipped", str(late))
            raise
        for name, value in outcome.costs.items():  # what constraints and the front read
            trial.set_user_attr(name, value)
        if outcome.pruned:
            raise optuna.TrialPruned()
        if len(self.spec.objectives) == 1:
            return outcome.value
        return (outcome.value, *(outcome.costs[m] for m, _ in self.spec.more_objectives))

    def _over_budget(self, trial: optuna.Trial, sweep: base.Sweep) -> bool:
        """Whether trials numbered before this one, any worker's, hold the whole budget."""
        held = [t for t in self.trials() if t.number < trial.number]
        return sweep.stop_reason(held, holding=True) is not None

    def _wait_for_others(self, sweep: base.Sweep) -> bool:
        """Stays while other workers' trials run, so one that dies is retried here.

        Returns True when there is work again (a retried trial, or budget left), False when
        the sweep is done."""
        told = False
        while not sweep.stop_reason(self.trials()):
            with warnings.catch_warnings():  # experimental, and what we need
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            self.recover_lost()
            trials = self.trials()
            if any(t.state == base.WAITING for t in trials):
                return True
            if not sweep.stop_reason(trials, holding=True):
                return True
            if not told:
                running = sum(t.state == base.RUNNING for t in trials)
                log.info(
                    "waiting for %d trial(s) running in other workers; a dead worker's trial "
                    "is failed and run again here%s",
                    running,
                    f" (on another machine: after {4 * _beat()} s without its heartbeat)"
                    if isinstance(self.store, RDBStorage)
                    else "",
                )
                told = True
            time.sleep(min(_beat(), 5))
        return False


def _beat() -> int:
    return int(os.environ.get("SWEEPER_HEARTBEAT_SECONDS", "30"))


def make_storage(url: str | None) -> optuna.storages.BaseStorage:
    """The study's store: `url` (an RDB URL, or a `.journal` file), else the default journal
    file under `mlruns/`, moving the studies of an earlier `mlruns/optuna.db` into it once.

    RDB stores get heartbeats ($SWEEPER_HEARTBEAT_SECONDS, default 30 s): a trial silent for
    four beats is stale, and another worker fails it, ends its MLflow run and queues it again."""
    if url is None:
        if EARLIER_STORAGE.exists() and not DEFAULT_STORAGE.exists():
            _move_studies(f"sqlite:///{EARLIER_STORAGE.resolve()}", DEFAULT_STORAGE)
        DEFAULT_STORAGE.parent.mkdir(parents=True, exist_ok=True)
        url = str(DEFAULT_STORAGE)
    if url.endswith(".journal"):
        return _journal(url)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    beat = _beat()
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are experimental; we rely on them
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=beat,
                    grace_period=beat * 4,
                    heartbeat_stale_trial_callback=_LostTrial(
                        "it stopped answering (heartbeat lost)"
                    ),
                )
        except sqlalchemy.exc.DBAPIError:
            # Workers starting together on a fresh database race to create its tables;
            # the loser finds them made on the next try.
            if attempt == 4:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def _journal(path: str | Path) -> JournalStorage:
    """A journal file's store, by its absolute path: Optuna's lock is a symlink to the path,
    read relative to the lock's own folder, so a relative one dangles and a lock left by a
    killed process is never broken after Optuna's 30 s grace (every other process waits)."""
    return JournalStorage(JournalFileBackend(str(Path(path).resolve())))


def _move_studies(earlier: str, journal: Path) -> None:
    """Copies every study of an earlier SQLite store into a new journal file (written aside,
    then renamed, so a crash leaves no half journal). The SQLite file is kept, unread."""
    studies = optuna.get_all_study_names(earlier)
    partial = journal.with_suffix(".journal.partial")
    partial.unlink(missing_ok=True)
    target = _journal(partial)
    for name in studies:
        optuna.copy_study(from_study_name=name, from_storage=earlier, to_storage=target)
    partial.rename(journal)
    log.info(
        "moved %d Optuna stud%s from %s into %s (a store several workers can share)",
        len(studies),
        "y" if len(studies) == 1 else "ies",
        EARLIER_STORAGE,
        journal,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as someone else's process
        pass
    return True


class _LostTrial:
    """A trial whose worker died: Optuna queues it again (once); its MLflow run ends failed."""

    def __init__(self, why: str):
        self.why = why
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=1)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.retry(study, trial)
        log.warning("trial %d failed: %s; it runs again", trial.number, self.why)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            from sweeper import tracking

            tracking.end_lost_run(run_id, self.why)


def suggest(trial: optuna.Trial, name: str, param: space.Param) -> object:
    if isinstance(param, space.Int):
        return trial.suggest_int(name, param.low, param.high, step=param.step, log=param.log)
    if isinstance(param, space.Float):
        return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)
    if isinstance(param, space.Choice):
        return trial.suggest_categorical(name, list(param.values))
    raise TypeError(f"fixed parameters are not suggested: {name}")


def _sampler(spec, seed=None):
    seed = spec.seed if seed is None else seed
    constraints = _Constraints(spec) if spec.constraints else None
    if spec.sampler == "tpe":
        # Small budgets: start modelling after a third of the trials, not Optuna's fixed 10.
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=max(3, min(10, spec.trials // 3)),
            constraints_func=constraints,
        )
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if spec.sampler == "gp":
        try:
            import torch  # noqa: F401  (GPSampler's requirement)
        except ImportError:
            raise SweeperError("sampler gp needs PyTorch: pip install torch") from None
        return optuna.samplers.GPSampler(seed=seed, constraints_func=constraints)
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(spec.families) or {}, seed=seed)
    raise SweeperError(f"Unknown optuna sampler {spec.sampler!r}")


class _Constraints:
    """Optuna's `constraints_func`: each bound's excess (<= 0 is kept) from the costs a
    trial recorded; one that recorded none (pruned early) breaks them all."""

    def __init__(self, spec: SweepSpec):
        self.bounds = dict(spec.constraints)

    def __call__(self, trial: optuna.trial.FrozenTrial) -> list[float]:
        return policy.excess(trial.user_attrs, self.bounds)


def _pruner(spec):
    if spec.pruner == "median":
        # First epochs are noisy: judge from epoch 3, against at least 3 finished trials.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=2, max_resource=spec.max_epochs, reduction_factor=3
        )
    if spec.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)
    return optuna.pruners.NopPruner()
