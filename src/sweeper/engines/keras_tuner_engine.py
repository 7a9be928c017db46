"""Keras Tuner: its oracles (random, Bayesian, Hyperband) propose; the sweep trains and logs.

Public API only: a `BaseTuner` whose `run_trial` hands each trial to the sweep (Keras Tuner's
documented way to tune anything that is not a plain `model.fit`), and oracles whose
`populate_space` (the documented hook of custom oracles) applies the sweep's policy and puts
each family's recipe first. The space becomes `HyperParameters` with one `conditional_scope`
per family. The project lives under `mlruns/keras-tuner/`; `overwrite=False` resumes it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras_tuner as kt
from keras_tuner.engine.base_tuner import BaseTuner
from keras_tuner.engine.trial import TrialStatus

from sweeper import space
from sweeper.config import SweepSpec
from sweeper.engines import base
from sweeper.errors import SweeperError
from sweeper.policy import MAX_FAILURES_IN_A_ROW

PROJECTS = Path("mlruns") / "keras-tuner"
ORACLES = {
    "bayesian": kt.oracles.BayesianOptimizationOracle,
    "random": kt.oracles.RandomSearchOracle,
    "hyperband": kt.oracles.HyperbandOracle,
}
STATES = {
    TrialStatus.RUNNING: base.RUNNING,
    TrialStatus.IDLE: base.WAITING,
    TrialStatus.COMPLETED: base.COMPLETE,
    TrialStatus.STOPPED: base.PRUNED,
    TrialStatus.INVALID: base.FAILED,
    TrialStatus.FAILED: base.FAILED,
}
log = logging.getLogger(__name__)


class Engine(base.Engine):
    def __init__(self, spec: SweepSpec, storage: str | None = None):
        super().__init__(spec, storage)
        if storage and "://" in storage:
            raise SweeperError(
                f"--storage: keras-tuner keeps its projects in a folder, not at {storage} "
                "(a database URL is for --engine optuna)"
            )
        self.oracle = _oracle(spec)
        self.tuner = _Tuner(
            self.oracle,
            hypermodel=_SpaceModel(spec.families),
            directory=storage or str(PROJECTS),  # --storage DIR: the projects' folder
            project_name=spec.study,
            overwrite=False,
        )

    def trials(self) -> list[base.PastTrial]:
        return [
            base.PastTrial(int(t.trial_id), STATES.get(t.status, base.FAILED), t.score)
            for t in self.oracle.trials.values()
        ]

    def search(self, sweep: base.Sweep) -> None:
        self.oracle.sweep = self.tuner.sweep = sweep
        self.tuner.diverged = set()
        self.oracle.first_points = [
            {"family": family, **{space.qualified(family, k): v for k, v in point.items()}}
            for family, point in sweep.first_points
        ]
        self.tuner.search(verbose=0)  # the sweep prints the progress lines


def declare(hp: kt.HyperParameters, families: space.SearchSpace) -> None:
    """The whole space: a family choice, then each family's parameters in its scope."""
    hp.Choice("family", list(families))
    for family, params in families.items():
        with hp.conditional_scope("family", [family]):
            for name, p in params.items():
                if not isinstance(p, space.Fixed):
                    _declare_one(hp, space.qualified(family, name), p)


def _declare_one(hp, name, p):
    if isinstance(p, space.Int):
        hp.Int(
            name,
            p.low,
            p.high,
            step=p.step if not p.log else None,
            sampling="log" if p.log else "linear",
        )
    elif isinstance(p, space.Float):
        hp.Float(name, p.low, p.high, step=p.step, sampling="log" if p.log else "linear")
    else:
        hp.Choice(name, list(p.values))


class _SpaceModel(kt.HyperModel):
    """Declares the space; the model itself is built by the family inside the trial."""

    def __init__(self, families):
        super().__init__()
        self.families = families

    def build(self, hp: kt.HyperParameters) -> None:
        declare(hp, self.families)


class _Tuner(BaseTuner):
    sweep: base.Sweep
    diverged: set[str]  # trials that stopped on a NaN loss: STOPPED, never the best

    def run_trial(self, trial: kt.engine.trial.Trial, *args, **kwargs) -> dict[str, float]:
        spec = self.oracle.spec
        values = trial.hyperparameters.values
        family = values["family"]
        params = {
            name: values[space.qualified(family, name)]
            for name, p in spec.families[family].items()
            if not isinstance(p, space.Fixed)
        }
        try:
            outcome = self.sweep.run_trial(
                int(trial.trial_id), family, params, epochs=values.get("tuner/epochs")
            )
        except Exception as error:  # recorded as FAILED; the search goes on
            raise kt.errors.FailedTrialError(f"{type(error).__name__}: {error}") from error
        if outcome.pruned:
            self.diverged.add(trial.trial_id)
        return {spec.metric: outcome.value}

    def on_trial_end(self, trial: kt.engine.trial.Trial) -> None:
        """A pruned (diverged) trial ends STOPPED, as Optuna's ends PRUNED: finished, but no
        score to rank."""
        if trial.trial_id in self.diverged:
            trial.status = TrialStatus.STOPPED
        super().on_trial_end(trial)

    def save_model(self, trial_id, model, step=0):
        """Models are logged to MLflow by the sweep; nothing to keep here."""

    def load_model(self, trial):
        raise NotImplementedError("load the model from the trial's MLflow run")


def _oracle(spec) -> kt.Oracle:
    """The sampler's oracle, with the sweep's policy in charge of stopping: no trial budget
    of Keras Tuner's own (it would count failed trials), and its cap on failures in a row
    above the sweep's, which stops first instead of raising."""
    oracle_class = ORACLES[spec.sampler]
    common = {
        "objective": kt.Objective(spec.metric, "max" if spec.direction == "maximize" else "min"),
        "seed": spec.seed,
        "max_consecutive_failed_trials": MAX_FAILURES_IN_A_ROW + 1,
    }
    if oracle_class is kt.oracles.HyperbandOracle:
        common.update(max_epochs=spec.max_epochs, factor=3)
    else:
        common.update(max_trials=None)
    oracle = _sweeper_oracle(oracle_class)(**common)
    oracle.spec = spec
    return oracle


def _sweeper_oracle(oracle_class: type) -> type:
    """`oracle_class` with the sweep's stop rule and its recipes first, both in
    `populate_space`."""

    class SweeperOracle(oracle_class):
        sweep: base.Sweep
        first_points: list[dict] = []

        def populate_space(self, trial_id: str) -> dict:
            trials = [
                base.PastTrial(int(t.trial_id), STATES.get(t.status, base.FAILED), t.score)
                for t in self.trials.values()
            ]
            if self.sweep.stop_reason(trials):
                return {"status": TrialStatus.STOPPED, "values": None}
            proposal = super().populate_space(trial_id)
            values = proposal.get("values") or {}
            fresh = "tuner/trial_id" not in values  # not Hyperband's next round of a trial
            point = self._untried_first_point()
            if proposal["status"] == TrialStatus.RUNNING and fresh and point:
                # Keep Hyperband's bookkeeping values (tuner/epochs, ...), swap the rest.
                kept = {k: v for k, v in values.items() if k.startswith("tuner/")}
                proposal = {**proposal, "values": {**point, **kept}}
            return proposal

        def _untried_first_point(self) -> dict | None:
            tried = [t.hyperparameters.values for t in self.trials.values()]
            for point in self.first_points:
                if not any(all(v.get(k) == x for k, x in point.items()) for v in tried):
                    return point
            return None

    SweeperOracle.__name__ = f"Sweeper{oracle_class.__name__}"
    return SweeperOracle
