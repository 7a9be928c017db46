"""The engine registry: each engine's module, samplers, pruners and abilities, one line each.

A leaf (it imports nothing of sweeper's), so `config` validates a sweep file against it and
`engines` builds on it, and the imports point one way: engines -> config -> registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweeper.errors import SweeperError


@dataclass(frozen=True)
class Registered:
    """An engine as the sweep file sees it: its module, its samplers, the first of which is
    the default, the pruners it takes (just "none" when it prunes on its own terms),
    whether its study can start from earlier studies' best trials (`warm_start`), and
    whether worker processes may run one study side by side (`--workers`)."""

    module: str
    samplers: tuple[str, ...]
    pruners: tuple[str, ...] = ("none",)
    warm_starts: bool = False
    shares_store: bool = False

    @property
    def default_sampler(self) -> str:
        return self.samplers[0]


ENGINES = {
    "optuna": Registered(
        "sweeper.engines.optuna_engine",
        samplers=("tpe", "random", "cmaes", "gp", "grid", "nsga2"),
        pruners=("none", "median", "hyperband", "successive-halving"),
        warm_starts=True,
        shares_store=True,
    ),
    "keras-tuner": Registered(
        "sweeper.engines.keras_tuner_engine", samplers=("bayesian", "random", "hyperband")
    ),
}


def names() -> list[str]:
    return list(ENGINES)


def registered(name: str) -> Registered:
    if name not in ENGINES:
        raise SweeperError(f"Unknown engine {name!r}. Known: {', '.join(ENGINES)}")
    return ENGINES[name]
