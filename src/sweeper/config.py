"""Sweep files: load, validate every field at once, and hold the result as a `SweepSpec`.

An error names the file, the field path, what was expected and the value received; nothing
runs and nothing is written until the whole file is valid.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweeper import data, registry, schema, space
from sweeper.errors import ConfigError, SweeperError

# Light on purpose: a mistake in a sweep file is reported before TensorFlow, MLflow or an
# engine loads (a test checks `sys.modules`).
PRUNERS = tuple(dict.fromkeys(p for e in registry.ENGINES.values() for p in e.pruners))
METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}
# What further objectives and constraints may weigh: every run's costs (`train.costs`).
COSTS = ("params", "model_mb", "latency_ms")
DIRECTIONS = ("maximize", "minimize")
# Samplers that search several objectives at once, and those that take constraints.
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "nsga2", "random", "gp")
CONSTRAINED_SAMPLERS = ("tpe", "nsga2", "gp")
PRECISIONS = ("float32", "mixed_bfloat16", "auto")  # auto: `devices.precision`
TOP_KEYS = (
    "dataset",
    "data",
    "engine",
    "sampler",
    "pruner",
    "objective",
    "objectives",
    "constraints",
    "budget",
    "seed",
    "study",
    "precision",
    "baseline_first",
    "warm_start",
    "refit",
    "workers",
    "keep_models",
    "save_optimizer",
    "families",
)


@dataclass
class SweepSpec:
    path: str
    dataset: str
    families: space.SearchSpace
    engine: str = "optuna"
    sampler: str = "tpe"
    pruner: str = "none"
    metric: str = "val_accuracy"  # the first objective: what selection and refits read
    direction: str = "maximize"
    # further objectives, (metric, direction) each: a multi-objective study and its front
    more_objectives: tuple[tuple[str, str], ...] = ()
    constraints: dict[str, float] = field(default_factory=dict)  # metric -> upper bound
    trials: int = 20
    timeout_minutes: float | None = None
    minutes: float | None = None  # the whole sweep's time, search and refit
    search_share: float = 0.3  # of `minutes`, for the search; 0: the first recipe alone
    max_epochs: int = 10
    target: float | None = None  # stop the sweep once a trial's metric reaches this
    seed: int = 0
    study: str = ""
    precision: str = "float32"
    baseline_first: bool = True  # each family's documented recipe is its first trial
    # whose best trials follow the recipes: "all" earlier studies of the dataset in the same
    # store, one study's name, or "none"
    warm_start: str = "all"
    val_fraction: float | None = None  # None: `data.validation_size`'s default
    image_size: tuple[int, int] = data.DEFAULT_IMAGE_SIZE
    limit: int | None = None
    refit_limit: int | None = None  # --limit, a smoke run's: the refit's images too
    image_dir: str | None = None  # where a csv: dataset's relative paths resolve
    refit_epochs: int | None = None  # retrain the best trial on train + validation
    # with `minutes`: the search ends early where its share would leave the refit fewer epochs
    refit_min_epochs: int | None = None
    workers: int | str = 1  # trial processes on this machine, or "auto" (`devices.plan`)
    keep_models: int | None = 3  # trials that keep their model (best first); None: all
    save_optimizer: bool = False  # logged models carry their optimizer's state
    text: str = field(default="", repr=False)

    def with_overrides(self, **overrides: Any) -> SweepSpec:
        """CLI options win over the file; an engine switch keeps a sampler and a pruner it
        knows, else takes its defaults."""
        chosen = {k: v for k, v in overrides.items() if v is not None}
        if "minutes" in chosen:  # --minutes plans both parts, unless they are given too
            chosen = {"timeout_minutes": None, "refit_epochs": None, **chosen}
        spec = dataclasses.replace(self, **chosen)
        engine = registry.registered(spec.engine)
        if spec.sampler not in engine.samplers:
            spec = dataclasses.replace(spec, sampler=engine.default_sampler)
        if spec.pruner not in engine.pruners:
            spec = dataclasses.replace(spec, pruner=engine.pruners[0])
        if not engine.warm_starts:
            spec = dataclasses.replace(spec, warm_start="none")
        return spec

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(metric, direction) of every objective, the first the one selection reads."""
        return [(self.metric, self.direction), *self.more_objectives]

    @property
    def search_minutes(self) -> float | None:
        """The search's time: `timeout_minutes`, else its share of `minutes`."""
        if self.timeout_minutes is not None:
            return self.timeout_minutes
        return None if self.minutes is None else self.minutes * self.search_share

    @property
    def searches(self) -> bool:
        """False where `budget.search_share` is 0: the first recipe's one timing trial, then
        its refit for the rest of `minutes` (where measured, a search did not pay)."""
        return self.minutes is None or self.search_share > 0

    @property
    def refit_from_minutes(self) -> bool:
        """Whether the refit's epochs are computed from the time left of `minutes`."""
        return self.minutes is not None and self.refit_epochs is None

    def reached(self, value: float) -> bool:
        """Whether `value` of the objective metric meets the target (never, without one)."""
        if self.target is None or math.isnan(value):
            return False
        return value >= self.target if self.direction == "maximize" else value <= self.target


@dataclass(frozen=True)
class Overrides:
    """The command line's changes to a sweep file (None: the file's value)."""

    trials: int | None = None
    timeout_minutes: float | None = None
    minutes: float | None = None
    engine: str | None = None
    study: str | None = None
    max_epochs: int | None = None
    refit_epochs: int | None = None
    target: float | None = None
    limit: int | None = None
    workers: int | str | None = None
    search_share: float | None = None

    def apply(self, spec: SweepSpec) -> SweepSpec:
        """`spec` changed (`SweepSpec.with_overrides`); a smoke run's `limit` holds for
        the refit too; a target the objective cannot reach is refused."""
        changed = spec.with_overrides(**dataclasses.asdict(self), refit_limit=self.limit)
        if expected := target_problem(changed.metric, changed.target):
            raise SweeperError(f"--target: expected {expected}. Received: {changed.target:g}")
        if changed.search_share == 0 and changed.minutes is None:
            raise SweeperError("--search-share 0 (no search): expected --minutes beside it")
        return changed


def load(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, [f"file not found: {path}"])
    return from_text(path.read_text(), path)


def from_text(text: str, path: str | Path) -> SweepSpec:
    """A sweep file's text, validated as `load` does; `path` names it in errors."""
    path = Path(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(path, [f"not valid YAML: {str(error).splitlines()[0]}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(path, ["expected a mapping of fields (dataset, families, ...)"])
    problems: list[str] = []
    spec = _build(raw, path, problems)
    if problems or spec is None:
        raise ConfigError(path, problems)
    spec.text = text
    return spec


def _build(raw, path, problems) -> SweepSpec | None:
    def problem(field_path, expected, received):
        problems.append(f"{field_path}: expected {expected}. Received: {received!r}")

    for key in raw:
        if key not in TOP_KEYS:
            problem(key, f"one of {', '.join(TOP_KEYS)}", key)
    dataset = raw.get("dataset")
    if not isinstance(dataset, str):
        problem("dataset", "a dataset name", dataset)
    elif not (dataset in data.NAMED or dataset.startswith(data.SOURCE_PREFIXES)):
        problem("dataset", f"one of {', '.join(data.known_names())}", dataset)

    engine = _one_of(raw, "engine", tuple(registry.ENGINES), "optuna", problem)
    registered = registry.ENGINES.get(engine)
    sampler = _one_of(
        raw,
        "sampler",
        registered.samplers if registered else (),
        registered.default_sampler if registered else None,
        problem,
        f"a sampler of {engine}",
    )
    pruner = _one_of(raw, "pruner", PRUNERS, "none", problem)
    if registered and pruner in PRUNERS and pruner not in registered.pruners:
        problem(
            "pruner",
            f"{' or '.join(registered.pruners)} with {engine} (it prunes on its "
            "own terms: see its samplers)",
            pruner,
        )
    precision = _one_of(raw, "precision", PRECISIONS, "float32", problem)

    objective = _mapping(raw, "objective", problem)
    metric = objective.get("metric", "val_accuracy")
    if metric not in METRICS:
        problem("objective.metric", f"one of {', '.join(METRICS)}", metric)
    direction = objective.get("direction", METRICS.get(metric, "maximize"))
    if metric in METRICS and direction != METRICS[metric]:
        problem("objective.direction", f"{METRICS[metric]} for {metric}", direction)

    _unknown(objective, ("metric", "direction"), "objective", problem)
    more_objectives: list[tuple[str, str]] = []
    if "objectives" in raw:
        metric, direction, more_objectives = _objectives(raw, problem)
    objectives = len(more_objectives) + 1
    if objectives > 1 and pruner != "none":
        problem("pruner", "none with several objectives (Optuna's pruners judge one)", pruner)
    if objectives > 1 and registered and engine != "optuna":
        problem(
            "objectives",
            f"one objective with {engine} (its multi-objective sums them into one score; "
            "engine: optuna searches the front)",
            len(more_objectives) + 1,
        )
    elif objectives > 1 and sampler not in MULTI_OBJECTIVE_SAMPLERS:
        several = f"one of {', '.join(MULTI_OBJECTIVE_SAMPLERS)} with several objectives"
        problem("sampler", several, sampler)
    constraints = _mapping(raw, "constraints", problem)
    for name, bound in constraints.items():
        if name not in COSTS:
            problem(f"constraints.{name}", f"a bound on one of {', '.join(COSTS)}", name)
        elif not isinstance(bound, (int, float)) or isinstance(bound, bool) or bound <= 0:
            problem(f"constraints.{name}", "an upper bound above 0", bound)
    if constraints and sampler not in CONSTRAINED_SAMPLERS:
        problem("sampler", f"one of {', '.join(CONSTRAINED_SAMPLERS)} with constraints", sampler)
    budget = _mapping(raw, "budget", problem)
    _unknown(
        budget,
        ("trials", "minutes", "search_share", "timeout_minutes", "max_epochs", "target"),
        "budget",
        problem,
    )
    trials = _positive(budget, "trials", 20, int, problem, "budget.")
    timeout = _positive(budget, "timeout_minutes", None, (int, float), problem, "budget.")
    minutes = _positive(budget, "minutes", None, (int, float), problem, "budget.")
    search_share = budget.get("search_share", SweepSpec.search_share)
    if not isinstance(search_share, (int, float)) or not 0 <= search_share < 1:
        problem(
            "budget.search_share",
            "a fraction of budget.minutes from 0 (no search) to below 1",
            search_share,
        )
    elif search_share == 0 and "minutes" not in budget:
        problem("budget.search_share", "budget.minutes beside 0 (no search)", search_share)
    if "minutes" in budget and "timeout_minutes" in budget:
        problem(
            "budget.timeout_minutes",
            "no timeout beside budget.minutes (minutes sets the search's share)",
            timeout,
        )
    max_epochs = _positive(budget, "max_epochs", 10, int, problem, "budget.")
    target = budget.get("target")
    if expected := target_problem(metric, target):
        problem("budget.target", expected, target)
    baseline_first = raw.get("baseline_first", True)
    if not isinstance(baseline_first, bool):
        problem("baseline_first", "true or false", baseline_first)
    warm_start = raw.get("warm_start", "all" if registered and registered.warm_starts else "none")
    if not isinstance(warm_start, str) or not warm_start:
        problem("warm_start", "all, none or the name of an earlier study", warm_start)
    elif registered and not registered.warm_starts and warm_start != "none":
        problem(
            "warm_start",
            f"none with {engine} (its oracles take no trials from another study)",
            warm_start,
        )
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        problem("seed", "an integer", seed)

    options = _mapping(raw, "data", problem)
    val_fraction = options.get("validation_split")
    if val_fraction is not None and (
        not isinstance(val_fraction, float) or not 0 < val_fraction < 1
    ):
        problem("data.validation_split", "a fraction between 0 and 1", val_fraction)
    image_size = options.get("image_size", list(data.DEFAULT_IMAGE_SIZE))
    if not (
        isinstance(image_size, list)
        and len(image_size) == 2
        and all(isinstance(s, int) and s >= 8 for s in image_size)
    ):
        problem("data.image_size", "[height, width] in pixels, each at least 8", image_size)
    limit = _positive(options, "limit", None, int, problem, "data.")
    image_dir = options.get("image_dir")
    if image_dir is not None and not (
        isinstance(image_dir, str) and isinstance(dataset, str) and dataset.startswith("csv:")
    ):
        problem("data.image_dir", "a folder, for a csv: dataset", image_dir)
    _unknown(options, ("validation_split", "image_size", "limit", "image_dir"), "data", problem)

    refit = _mapping(raw, "refit", problem)
    _unknown(refit, ("epochs", "min_epochs"), "refit", problem)
    refit_epochs = _positive(refit, "epochs", None, int, problem, "refit.")
    refit_min_epochs = _positive(refit, "min_epochs", None, int, problem, "refit.")
    if "min_epochs" in refit and "minutes" not in budget:
        problem(
            "refit.min_epochs",
            "budget.minutes beside it (the search gives up its time to keep them)",
            refit_min_epochs,
        )
    if "minutes" in budget and "epochs" in refit:
        problem(
            "refit.epochs",
            "no epochs beside budget.minutes (the refit gets the epochs that fit what is left)",
            refit_epochs,
        )

    workers = raw.get("workers", 1)
    if workers != "auto" and (
        not isinstance(workers, int) or isinstance(workers, bool) or workers < 1
    ):
        problem("workers", "a number of workers (1 or more) or auto", workers)

    keep_models = raw.get("keep_models", 3)
    if keep_models != "all" and (
        not isinstance(keep_models, int) or isinstance(keep_models, bool) or keep_models < 0
    ):
        problem("keep_models", "a number of trials (0 or more) or all", keep_models)
    save_optimizer = raw.get("save_optimizer", False)
    if not isinstance(save_optimizer, bool):
        problem("save_optimizer", "true or false", save_optimizer)

    search = _families(raw.get("families"), problem)
    if isinstance(dataset, str) and not data.mirror_safe(dataset):
        _no_mirrors(search, dataset, problem)
    if sampler == "grid" and search and (len(search) != 1 or space.grid(search) is None):
        problem(
            "sampler", "grid on one family whose parameters are choices or stepped ranges", sampler
        )
    if problems:
        return None
    return SweepSpec(
        path=str(path),
        dataset=dataset,
        families=search,
        engine=engine,
        sampler=sampler,
        pruner=pruner,
        metric=metric,
        direction=direction,
        more_objectives=tuple(more_objectives),
        constraints={k: float(v) for k, v in constraints.items()},
        trials=trials,
        timeout_minutes=timeout,
        minutes=minutes,
        search_share=float(search_share) if isinstance(search_share, (int, float)) else 0.3,
        max_epochs=max_epochs,
        seed=seed,
        target=None if target is None else float(target),
        baseline_first=baseline_first,
        warm_start=warm_start,
        study=str(raw.get("study") or Path(path).stem),
        precision=precision,
        val_fraction=val_fraction,
        image_size=tuple(image_size),
        limit=limit,
        image_dir=image_dir,
        refit_epochs=refit_epochs,
        refit_min_epochs=refit_min_epochs,
        workers=workers,
        keep_models=None if keep_models == "all" else keep_models,
        save_optimizer=save_optimizer,
    )


def _no_mirrors(search: space.SearchSpace, dataset: str, problem) -> None:
    """Flips teach digits what they are not: a mirrored 2 is no digit at all. A family whose
    default flips (cnn_bn) is refused too, unless the file turns it off."""
    for family, params in search.items():
        defaults = schema.defaults(family)
        for name in ("flip", "tta"):
            if name in params:
                mirrors = any(v != "none" for v in space.extremes(params[name]))
                received: object = params[name]
            else:
                mirrors, received = defaults[name] != "none", f"{defaults[name]} (its default)"
            if mirrors:
                problem(
                    f"families.{family}.{name}",
                    f"none on {dataset} (mirrored images are no longer of their class)",
                    received,
                )


def _objectives(raw, problem) -> tuple[str, str, list[tuple[str, str]]]:
    """`objectives:`: the first is val_accuracy or val_loss (what selection reads), then
    any of `COSTS`, each with a direction."""
    listed = raw["objectives"]
    if "objective" in raw:
        problem("objectives", "objectives or objective, not both", "both")
    if not isinstance(listed, list) or not listed or not all(isinstance(o, dict) for o in listed):
        problem("objectives", "a list of {metric, direction}", listed)
        return "val_accuracy", "maximize", []
    found = []
    for i, entry in enumerate(listed):
        allowed = tuple(METRICS) if i == 0 else COSTS
        metric = entry.get("metric")
        if metric not in allowed:
            what = "the first" if i == 0 else "a further one"
            problem(f"objectives[{i}].metric", f"{what}: one of {', '.join(allowed)}", metric)
        direction = entry.get("direction", METRICS.get(metric, "minimize"))
        if direction not in DIRECTIONS or (metric in METRICS and direction != METRICS[metric]):
            expected = METRICS.get(metric) or " or ".join(DIRECTIONS)
            problem(f"objectives[{i}].direction", expected, direction)
        _unknown(entry, ("metric", "direction"), f"objectives[{i}]", problem)
        found.append((str(metric), str(direction)))
    if len({m for m, _ in found}) < len(found):
        problem("objectives", "each metric once", [m for m, _ in found])
    return found[0][0], found[0][1], found[1:]


def target_problem(metric: str, target: object) -> str | None:
    """What a target for `metric` must be, when `target` is not that (None: no target)."""
    if target is None:
        return None
    if (
        not isinstance(target, (int, float))
        or isinstance(target, bool)
        or (metric == "val_accuracy" and not 0 < target <= 1)
    ):
        return f"a value of {metric} to stop at" + (
            " (between 0 and 1; 0.985 for 98.5%)" if metric == "val_accuracy" else ""
        )
    return None


def _families(raw, problem) -> space.SearchSpace:
    names = schema.family_names()
    if not isinstance(raw, dict) or not raw:
        problem(
            "families", f"a mapping of family -> parameters (families: {', '.join(names)})", raw
        )
        return {}
    parsed: space.SearchSpace = {}
    for family, params in raw.items():
        if family not in names:
            problem(f"families.{family}", f"one of {', '.join(names)}", family)
            continue
        if params is None:
            params = {}
        if not isinstance(params, dict):
            problem(f"families.{family}", "a mapping of parameter -> range", params)
            continue
        known = schema.params_of(family)
        parsed[family] = {}
        for name, entry in params.items():
            field_path = f"families.{family}.{name}"
            if name not in known:
                problem(field_path, f"a parameter of {family}: {', '.join(known)}", name)
                continue
            param, expected = space.parse(entry)
            if param is not None:
                expected = expected or _disallowed(param, known[name])
            if expected or param is None:
                problem(field_path, expected, entry)
            else:
                parsed[family][name] = param
        if {"weight_decay", "lr_weight_decay"} <= set(params):
            problem(
                f"families.{family}.lr_weight_decay",
                "weight_decay or lr_weight_decay (their product with learning_rate), not both",
                params["lr_weight_decay"],
            )
    return parsed


def _disallowed(param: space.Param, rule: schema.Param) -> str | None:
    """What the schema allows, when a fixed value, a choice or a range's ends break it."""
    if isinstance(param, space.Float) and rule.type is int:
        return "an int range or choice (this parameter is an integer)"
    for value in space.extremes(param):
        if expected := rule.problem(value):
            return (
                expected
                if isinstance(param, space.Fixed)
                else (f"{expected} for every value ({value!r} is not)")
            )
    return None


def _unknown(mapping, allowed, prefix, problem):
    for key in mapping:
        if key not in allowed:
            problem(f"{prefix}.{key}", f"one of {', '.join(allowed)}", key)


def _one_of(raw, key, allowed, default, problem, expected=None):
    value = raw.get(key, default)
    if value not in allowed:
        problem(key, f"{expected or key} ({', '.join(allowed)})", value)
    return value


def _mapping(raw, key, problem) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        problem(key, "a mapping", value)
        return {}
    return value


def _positive(raw, key, default, kind, problem, prefix=""):
    value = raw.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
        problem(f"{prefix}{key}", "a positive number", value)
    return value
