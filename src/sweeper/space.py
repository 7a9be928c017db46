"""One description of a search space; each engine translates it in its own module.

In a sweep file a parameter is one of:
  `{int: [low, high]}` (with optional `step:` and `log: true`),
  `{float: [low, high]}` (optional `step:` or `log: true`),
  `{choice: [a, b, c]}`, or a plain value, which stays fixed.
The family is itself a choice; each family's parameters exist only when it is chosen. Engines
name a parameter `family.param` (so `cnn.dropout` and `mlp.dropout` never collide); MLflow
logs the plain `param`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def tidy(self, value: Any) -> Any:
        """`value` as a user would write it (only floats need rounding)."""
        return value


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def contains(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        if not self.low - 1e-12 <= value <= self.high + 1e-12:
            return False
        if self.step is None:
            return True
        ratio = (value - self.low) / self.step
        return math.isclose(ratio, round(ratio), abs_tol=1e-6)

    def tidy(self, value: float) -> float:
        """`value` as a user would write it: on its step's grid without float noise
        (0.35, not 0.35000000000000003), else to 4 significant digits."""
        if self.step is None:
            return float(f"{value:.4g}")
        return float(f"{self.low + round((value - self.low) / self.step) * self.step:.10g}")


@dataclass(frozen=True)
class Choice:
    values: tuple

    def contains(self, value: Any) -> bool:
        return value in self.values

    def tidy(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class Fixed:
    value: Any

    def contains(self, value: Any) -> bool:
        return value == self.value

    def tidy(self, value: Any) -> Any:
        return value


Param = Int | Float | Choice | Fixed
SearchSpace = dict[str, dict[str, Param]]  # family -> parameter -> its range


def qualified(family: str, name: str) -> str:
    """The name an engine uses for a family's parameter."""
    return f"{family}.{name}"


def parse(raw: Any) -> tuple[Param | None, str | None]:
    """One sweep-file entry -> (param, None), or (None, what was expected)."""
    if not isinstance(raw, dict):
        return Fixed(raw), None
    kinds = [k for k in ("int", "float", "choice") if k in raw]
    if len(kinds) != 1:
        return None, "exactly one of int, float or choice (or a plain value)"
    kind = kinds[0]
    extra = set(raw) - {kind, "step", "log"}
    if extra:
        return None, f"only {kind}, step and log; unknown key(s): {', '.join(sorted(extra))}"
    if kind == "choice":
        values = raw["choice"]
        if not isinstance(values, list) or not values:
            return None, "choice: a non-empty list"
        if len({repr(v) for v in values}) != len(values):
            return None, "choice: values without repeats"
        return Choice(tuple(values)), None
    return _parse_range(kind, raw)


def _parse_range(kind, raw):
    bounds, step, log = raw[kind], raw.get("step"), raw.get("log", False)
    number = int if kind == "int" else (int, float)
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)
    ):
        return None, f"{kind}: [low, high] of {'integers' if kind == 'int' else 'numbers'}"
    low, high = bounds
    if low >= high:
        return None, f"{kind}: low < high (received [{low}, {high}])"
    if not isinstance(log, bool):
        return None, "log: true or false"
    if log and low <= 0:
        return None, f"{kind}: low > 0 with log: true (received {low})"
    if step is not None and (not isinstance(step, number) or step <= 0):
        return None, f"step: a positive {'integer' if kind == 'int' else 'number'}"
    if log and step not in (None, 1):
        return None, "either step or log: true, not both"
    if kind == "int":
        return Int(int(low), int(high), int(step or 1), log), None
    return Float(float(low), float(high), step, log), None


def extremes(param: Param) -> list:
    """The values that bound a parameter: a range's ends, every choice, the fixed value."""
    if isinstance(param, (Int, Float)):
        return [param.low, param.high]
    if isinstance(param, Choice):
        return list(param.values)
    return [param.value]


def baseline_point(space: dict[str, Param], recipe: dict, defaults: dict) -> dict | None:
    """The recipe's values for the searched parameters, or None if the space misses it."""
    point = {}
    for name, param in space.items():
        value = recipe.get(name, defaults.get(name))
        if not param.contains(value):
            return None
        if not isinstance(param, Fixed):
            point[name] = value
    return point


def grid(space: SearchSpace) -> dict[str, list] | None:
    """Every value of every parameter, for grid search; None if a range is continuous."""
    values: dict[str, list] = {"family": list(space)}
    for family, params in space.items():
        for name, p in params.items():
            if isinstance(p, Choice):
                values[qualified(family, name)] = list(p.values)
            elif isinstance(p, Int) and not p.log:
                values[qualified(family, name)] = list(range(p.low, p.high + 1, p.step))
            elif isinstance(p, Float) and p.step and not p.log:
                n = int(round((p.high - p.low) / p.step))
                values[qualified(family, name)] = [p.low + i * p.step for i in range(n + 1)]
            elif not isinstance(p, Fixed):
                return None
    return values
