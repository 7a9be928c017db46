"""Keras Tuner: its oracles (random, Bayesian, Hyperband) propose; our runner trains and logs.

The space becomes `HyperParameters` with one `conditional_scope` per family. The project
directory lives under `mlruns/keras-tuner/`, and `overwrite=False` resumes it.
"""

from __future__ import annotations

from pathlib import Path

import keras_tuner as kt
from keras_tuner.src.engine import base_tuner

from sweeper import space

PROJECTS = Path("mlruns") / "keras-tuner"


def run(spec, runner, storage: str | None = None):
    if storage:
        print("note: --storage is for the optuna engine; keras-tuner keeps its state in "
              f"{PROJECTS / spec.study}", flush=True)
    oracle = _oracle(spec, list(runner.baseline_points.items()), runner.out_of_time)
    tuner = _Tuner(oracle, runner=runner, hypermodel=_SpaceModel(spec.families),
                   directory=str(PROJECTS), project_name=spec.study, overwrite=False)
    if oracle.target_met():  # a resumed project
        print(f"study {spec.study} already met its target {spec.metric} {spec.target:g}",
              flush=True)
        return tuner
    tuner.search(verbose=0)  # our runner prints the progress lines
    return tuner


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
        hp.Int(name, p.low, p.high, step=p.step if not p.log else None,
               sampling="log" if p.log else "linear")
    elif isinstance(p, space.Float):
        hp.Float(name, p.low, p.high, step=p.step, sampling="log" if p.log else "linear")
    else:
        hp.Choice(name, list(p.values))


class _SpaceModel(kt.HyperModel):
    """Declares the space; the model itself is built by the family inside `train`."""

    def __init__(self, families):
        super().__init__()
        self.families = families

    def build(self, hp):
        declare(hp, self.families)


class _Tuner(base_tuner.BaseTuner):
    def __init__(self, oracle, runner, **kwargs):
        self.runner = runner
        super().__init__(oracle, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        spec = self.runner.spec
        values = trial.hyperparameters.values
        family = values["family"]
        params = {name: values[space.qualified(family, name)]
                  for name, p in spec.families[family].items() if not isinstance(p, space.Fixed)}
        finished = sum(t.status == "COMPLETED" for t in self.oracle.trials.values())
        try:
            outcome = self.runner.run(int(trial.trial_id), family, params,
                                      epochs=values.get("tuner/epochs"), position=finished + 1)
        except Exception as error:  # recorded as FAILED; the search goes on
            raise kt.errors.FailedTrialError(f"{type(error).__name__}: {error}") from error
        return {spec.metric: outcome.value}

    def save_model(self, trial_id, model, step=0):
        """Models are logged to MLflow by the runner; nothing to keep here."""

    def load_model(self, trial):
        raise NotImplementedError("load the model from the trial's MLflow run")


def _oracle(spec, baseline_points, out_of_time):
    objective = kt.Objective(spec.metric, "max" if spec.direction == "maximize" else "min")
    common = {"objective": objective, "seed": spec.seed}
    if spec.sampler == "hyperband":
        oracle = _sweeper_oracle(kt.oracles.HyperbandOracle)(
            spec, baseline_points, out_of_time, max_epochs=spec.max_epochs, factor=3,
            **common)
        oracle.max_trials = spec.trials  # Hyperband has no trial budget of its own
        return oracle
    cls = (kt.oracles.BayesianOptimizationOracle if spec.sampler == "bayesian"
           else kt.oracles.RandomSearchOracle)
    return _sweeper_oracle(cls)(spec, baseline_points, out_of_time, max_trials=spec.trials,
                                **common)


def _sweeper_oracle(oracle_class):
    """The oracle, handing out each family's baseline point before its own proposals, and
    stopping the search once a trial meets the sweep's target or its timeout passes."""

    class SweeperOracle(oracle_class):
        def __init__(self, spec, baseline_points, out_of_time, **kwargs):
            super().__init__(**kwargs)
            self.spec, self.out_of_time = spec, out_of_time
            self.queued = [{"family": family, **{space.qualified(family, k): v
                                                  for k, v in point.items()}}
                           for family, point in baseline_points]

        def target_met(self) -> bool:
            return any(t.score is not None and self.spec.reached(t.score)
                       for t in self.trials.values() if t.status == "COMPLETED")

        def populate_space(self, trial_id):
            if self.target_met() or self.out_of_time():
                return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
            return super().populate_space(trial_id)

        def _random_values(self):
            for values in self.queued:
                if not self._duplicate(values):
                    return dict(values)
            return super()._random_values()

    SweeperOracle.__name__ = f"Sweeper{oracle_class.__name__}"
    return SweeperOracle
