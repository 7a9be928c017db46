"""The engines: one module each behind the contract in `engines.base`, registered in
`sweeper.registry` (light: the CLI's choices, config validation and `sweeper --help` read
it without importing an engine). `get` imports the engine's module only when a sweep runs.
"""

from __future__ import annotations

import importlib

from sweeper.engines.base import Engine
from sweeper.registry import ENGINES, Registered, names, registered

__all__ = ["ENGINES", "Registered", "get", "names", "registered"]


def get(name: str) -> type[Engine]:
    """The engine's class (a subclass of `engines.base.Engine`), importing its module."""
    return importlib.import_module(registered(name).module).Engine
