"""The engine contract: what an engine gets from the sweep, and what it gives back.

An engine proposes trials; the sweep runs them. It gets:
  - `spec`: the sweep file as a `SweepSpec`; `spec.families` is the space (the family is a
    choice, its parameters exist only when it is chosen; name them `family.param`), with
    `spec.sampler`, `spec.pruner`, `spec.seed`, `spec.direction` and `spec.max_epochs`;
  - a `Sweep` with the points to try first (`first_points`), `run_trial` to train one trial
    (it reports each epoch through `report` and tells whether the trial was pruned), and
    `stop_reason`, the sweep's policy (budget, timeout, target, failures in a row), and
    `family_to_keep`, the family to sample alone once the others cannot compete.
It gives back, through `trials()`, what its store holds: numbered trials with their state and
value, from this process and any other worker of the same study. Its store is where a study
resumes from. An engine records a trial that raised as failed and goes on; Ctrl-C
(`KeyboardInterrupt`) goes through.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sweeper.config import SweepSpec

# Trial states as every engine reports them.
WAITING, RUNNING, COMPLETE, PRUNED, FAILED = "waiting", "running", "complete", "pruned", "failed"
FINISHED = (COMPLETE, PRUNED)


@dataclass(frozen=True)
class PastTrial:
    """One trial in an engine's store: `value` is its first objective's; `feasible`,
    whether it kept the sweep's constraints."""

    number: int
    state: str
    value: float | None = None
    feasible: bool = True
    family: str = ""


@dataclass(frozen=True)
class Outcome:
    """What a trial gives its engine: the first objective's value, whether it was pruned
    (then `value` is the last reported one), and what its model costs (`train.costs`:
    params, model_mb, latency_ms), which further objectives and constraints weigh."""

    value: float
    pruned: bool
    costs: dict[str, float] = field(default_factory=dict)


class NotStarted(Exception):
    """A sampled trial that `Sweep.run_trial` did not start, as it could not finish before
    the deadline; `Sweep.stop_reason` says so from then on. No run was opened for it."""


# report(epoch from 1, value of the objective) -> True when the trial should stop (pruned)
Report = Callable[[int, float], bool]


class Sweep(Protocol):
    """What an engine gets from the driver (`sweep.SweepRun`)."""

    first_points: list[tuple[str, dict]]  # (family, params) to run before sampling

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
        """Trains trial `number` with `params` (the searched ones; fixed ones are added),
        `epochs` or the sweep's max; `on_start(run_id)` names its MLflow run. Raises when
        the trial failed, after logging it; `NotStarted` when it would not finish in the
        time left (the engine records it as it likes, not as a trial that ran)."""
        ...

    def stop_reason(self, trials: Sequence[PastTrial], *, holding: bool = False) -> str | None:
        """Why no further trial should start, given the store's trials; None to go on.
        With `holding`, running trials count against the budget (other workers hold them)."""
        ...

    def seconds_left(self) -> float | None:
        """Until the sweep's timeout; None without one."""
        ...

    def family_to_keep(self, trials: Sequence[PastTrial]) -> str | None:
        """The only family worth sampling from here, when every other one is behind it
        beyond noise (`policy.family_to_keep`); None while any could still win. An engine
        whose sampler can be narrowed samples only that family from then on."""
        ...


class Engine(ABC):
    """One engine: opens (or resumes) the study `spec.study` in `storage` on creation."""

    def __init__(self, spec: SweepSpec, storage: str | None = None):
        self.spec = spec
        self.storage = storage

    @abstractmethod
    def trials(self) -> list[PastTrial]:
        """Every trial of the study, all workers', as the engine's store holds them."""

    @abstractmethod
    def search(self, sweep: Sweep) -> None:
        """Proposes trials and runs each through `sweep.run_trial` until
        `sweep.stop_reason` gives a reason (or the engine runs out of proposals)."""

    def recover_lost(self) -> list[int]:
        """Fails the running trials whose worker process died, and queues each again;
        returns their numbers. Engines whose study lives in one process have none."""
        return []

    def front(self) -> list[int]:
        """The numbers of the trials on the Pareto front of a multi-objective study (of
        the feasible ones, with constraints); [] for an engine or study with one."""
        return []

    def claim_refit(self, number: int) -> bool:
        """Claims the refit of trial `number` for this process, once per study: True for
        the one process that gets it. A study only one process runs has no rival."""
        return True

    @classmethod
    def importances(cls, study: str, storage: str | None = None) -> dict[str, dict[str, float]]:
        """Parameter importances per family of an existing study, for reports; {} where the
        engine has none or the study does not exist. Creates nothing."""
        return {}
