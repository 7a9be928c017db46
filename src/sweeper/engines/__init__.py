"""The engines: one module each behind the contract in `engines.base`, one registry line each.

The registry is light (no Optuna, no Keras Tuner): the CLI's choices, config validation, the
samplers of each engine and `sweeper --help` read it without importing an engine. `get`
imports the engine's module only when a sweep runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sweeper.errors import SweeperError

if TYPE_CHECKING:  # the base imports config, which imports this registry
    from sweeper.engines.base import Engine


@dataclass(frozen=True)
class Registered:
    """An engine as the sweep file sees it: its module, its samplers, the first of which is
    the default, the pruners it takes (just "none" when it prunes on its own terms), and
    whether its study can start from earlier studies' best trials (`warm_start`)."""

    module: str
    samplers: tuple[str, ...]
    pruners: tuple[str, ...] = ("none",)
    warm_starts: bool = False

    @property
    def default_sampler(self) -> str:
        return self.samplers[0]


ENGINES = {
    "optuna": Registered(
        "sweeper.engines.optuna_engine",
        samplers=("tpe", "random", "cmaes", "gp", "grid", "nsga2"),
        pruners=("none", "median", "hyperband", "successive-halving"),
        warm_starts=True,
    ),
    "keras-tuner": Registered(
        "sweeper.engines.keras_tuner_engine", samplers=("bayesian", "random", "hyperband")
    ),
}

__all__ = ["ENGINES", "Registered", "get", "names"]


def names() -> list[str]:
    return list(ENGINES)


def registered(name: str) -> Registered:
    if name not in ENGINES:
        raise SweeperError(f"Unknown engine {name!r}. Known: {', '.join(ENGINES)}")
    return ENGINES[name]


def get(name: str) -> type[Engine]:
    """The engine's class (a subclass of `engines.base.Engine`), importing its module."""
    return importlib.import_module(registered(name).module).Engine
