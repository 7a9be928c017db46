"""Sweep engines. Each module has `run(spec, runner, storage=None)`: it proposes trials from
`spec.families` and calls `runner.run(number, family, params, report)` for each.

Optuna and Keras Tuner are imported only inside their own module. To add an engine, write a
module here and name it in `ENGINES` (and in `config.ENGINES` with its samplers).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sweeper.errors import SweeperError

ENGINES = {"optuna": "sweeper.engines.optuna_engine",
           "keras-tuner": "sweeper.engines.keras_tuner_engine"}

__all__ = ["ENGINES", "get"]


def get(name: str) -> ModuleType:
    if name not in ENGINES:
        raise SweeperError(f"Unknown engine {name!r}. Known: {', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[name])
