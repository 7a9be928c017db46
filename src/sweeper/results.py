"""Results: find the best run, export its model, predict with it, rerun a logged trial.

An exported `.keras` file is Keras' own format with one extra entry, `sweeper.json` (class
names, the run it came from); Keras ignores it when loading, `predict` reads it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sweeper import baselines, schema, tracking
from sweeper.errors import SweeperError
from sweeper.metrics import standard_error
from sweeper.tracking import names

METADATA = "sweeper.json"
SELECTION_METRICS = ("val_accuracy", "test_accuracy")


@dataclass
class Selection:
    dataset: str | None = None
    sweep: str | None = None
    parent: str | None = None
    family: str | None = None
    metric: str = "val_accuracy"
    limits: dict[str, float] = field(default_factory=dict)  # metric -> the most it may be
    pareto: bool = False  # only the trials on a multi-objective sweep's front


def finished_runs(
    selection: Selection, kinds: tuple[str, ...] = (names.KIND_TRIAL, names.KIND_BASELINE)
) -> list:
    """Completed trial (and baseline) runs matching the selection, best first."""
    if selection.metric not in SELECTION_METRICS:
        raise SweeperError(
            f"--metric must be one of {', '.join(SELECTION_METRICS)}. Received: {selection.metric}"
        )
    runs = tracking.search_runs(
        {
            names.STATE: names.COMPLETE,
            names.STUDY: selection.sweep,
            names.PARENT: selection.parent,
            names.FAMILY: selection.family,
            names.DATASET: selection.dataset,
            names.PARETO: "yes" if selection.pareto else None,
        },
        status=names.RUN_STATUS[names.COMPLETE],
    )
    runs = [
        r
        for r in runs
        if r.data.tags.get(names.KIND) in kinds
        and all(r.data.metrics.get(m, math.inf) <= bound for m, bound in selection.limits.items())
    ]
    # Among equals the earliest first, as the sweep ranks them (its lowest trial number):
    # `best` then names the run whose model the sweep kept.
    return sorted(runs, key=lambda r: (-score(r, selection.metric), r.info.start_time))


def front_table(selection: Selection) -> str:
    """The Pareto front of the selection's multi-objective sweep(s): each trial on it,
    most accurate first, with what it costs."""
    runs = finished_runs(selection, kinds=(names.KIND_TRIAL,))
    if not runs:
        raise SweeperError(
            "no trial is on a Pareto front here: fronts come from sweeps with several "
            "objectives (objectives: in the sweep file)"
        )
    lines = [f"{'run':34} {'validation':>10} {'test':>7} {'params':>10} {'MB':>7} {'ms':>7}"]
    for run in runs:
        m = run.data.metrics
        lines.append(
            f"{run.info.run_name + ' ' + run.info.run_id[:8]:34} {score(run):10.4f} "
            f"{m.get(names.TEST_ACCURACY, math.nan):7.4f} {m.get('params', math.nan):10,.0f} "
            f"{m.get('model_mb', math.nan):7.3f} {m.get('latency_ms', math.nan):7.2f}"
        )
    return "\n".join(lines)


def score(run: Any, metric: str = "val_accuracy") -> float:
    """Validation accuracy: the best epoch's (runs before that metric existed: the last's)."""
    m = run.data.metrics
    if metric == "val_accuracy":
        return m.get(names.BEST_VAL_ACCURACY, m.get("val_accuracy", -1.0))
    return m.get(metric, -1.0)


def documented(recipe: baselines.Baseline, dataset: str | None) -> str:
    """The recipe's documented accuracy, where it was documented on this dataset."""
    if recipe.dataset not in (None, dataset):
        return f"n/a (documented on {recipe.dataset})"
    return f"{recipe.documented_accuracy:.4f}" if recipe.documented_accuracy else "not printed"


def latest_dataset(selection: Selection) -> tuple[str | None, list[str]]:
    """Where nothing narrows the selection to one dataset and runs span several: the latest
    sweep's dataset, and all of them (so `best` never compares across datasets silently)."""
    if selection.dataset or selection.sweep or selection.parent:
        return None, []
    datasets = sorted({r.data.tags.get(names.DATASET, "?") for r in finished_runs(selection)})
    if len(datasets) < 2:
        return None, datasets
    latest = tracking.search_runs({names.KIND: names.KIND_SWEEP}, newest_first=True, max_results=1)
    if not latest or latest[0].data.tags.get(names.DATASET) not in datasets:
        raise SweeperError(
            f"runs on several datasets: choose one with --dataset ({', '.join(datasets)})"
        )
    return latest[0].data.tags[names.DATASET], datasets


def best_run(selection: Selection) -> Any:
    runs = finished_runs(selection)
    if not runs:
        described = (
            ", ".join(f"{k}={v}" for k, v in vars(selection).items() if v and k != "metric")
            or "any dataset"
        )
        raise SweeperError(
            f"No finished run matches ({described}); run a sweep or a baseline first"
        )
    return runs[0]


def describe(run: Any) -> str:
    """The best run, with its family's documented and measured baseline beside it."""
    p, m = run.data.params, run.data.metrics
    family, dataset = p.get("family", "?"), p.get("data_source", p.get("dataset"))
    lines = [
        f"best run  {run.info.run_id}  ({run.info.run_name})",
        f"family    {family} on {p.get('dataset')}",
        f"accuracy  validation {score(run):.4f}{_interval(run)}, "
        f"test {m.get('test_accuracy', float('nan')):.4f}",
        "params    "
        + ", ".join(
            f"{k}={v}"
            for k, v in sorted(p.items())
            if family in schema.FAMILIES and k in schema.params_of(family)
        ),
    ]
    if all(c in m for c in names.COSTS):
        lines.append(
            f"cost      {m['params']:,.0f} trainable parameters, {m['model_mb']:.3f} MB, "
            f"{m['latency_ms']:.2f} ms an image"
        )
    recipe = baselines.for_family(family, dataset)
    if recipe:
        measured = recipe_trial(run, family) or measured_baseline(recipe.name, p.get("dataset"))
        seen = "not run yet (sweeper baseline " + recipe.name + ")"
        if measured:
            where = measured.info.run_id
            if measured.data.tags.get(names.KIND) == names.KIND_TRIAL:
                where += f", {measured.info.run_name}: this sweep's recipe trial"
            seen = f"{measured.data.metrics['test_accuracy']:.4f} (run {where})"
        lines.append(
            f"baseline  {recipe.name}: documented {documented(recipe, dataset)}, measured {seen}"
        )
    refit = refit_of(run)
    if refit is None and (instead := sweep_refit(run)):
        lines.append(
            f"refit     its sweep refitted {instead.info.run_name} instead "
            f"({instead.data.tags.get(names.REFIT_CHOICE, 'its choice')}); "
            f"--export writes that one"
        )
        refit = instead
    if refit:
        rm = refit.data.metrics
        tta = f" (flip TTA {rm['test_accuracy_tta']:.4f})" if "test_accuracy_tta" in rm else ""
        test = rm.get(names.TEST_ACCURACY, math.nan)
        lines.append(
            f"refit     {refit.info.run_id}: trained on training + validation data for "
            f"{int(rm.get(names.EPOCHS, 0))} epochs, test {test:.4f}{tta}; --export writes it"
        )
    return "\n".join(lines)


def refit_of(run: Any) -> Any:
    """The newest completed refit of a trial run, if the sweep made one."""
    runs = tracking.search_runs(
        {
            names.KIND: names.KIND_REFIT,
            names.REFIT_OF: run.info.run_id,
            names.STATE: names.COMPLETE,
        },
        newest_first=True,
        max_results=1,
    )
    return runs[0] if runs else None


def result_of(run: Any) -> Any:
    """What `best --export` writes for `run`: its refit, else its sweep's refit (of the
    recipe, when the sweep found `run` within noise of it), else the run."""
    return refit_of(run) or sweep_refit(run) or run


def sweep_refit(run: Any) -> Any:
    """The newest completed refit of `run`'s sweep, where it refitted another trial (the
    recipe, when no trial beat it beyond noise)."""
    parent = run.data.tags.get(names.PARENT)
    if parent is None or run.data.tags.get(names.KIND) != names.KIND_TRIAL:
        return None
    runs = tracking.search_runs(
        {names.PARENT: parent, names.KIND: names.KIND_REFIT, names.STATE: names.COMPLETE},
        newest_first=True,
        max_results=1,
    )
    return runs[0] if runs else None


def _interval(run: Any) -> str:
    """ " +- SE (1 SE, N validation images)" of a run's validation accuracy."""
    images = int(run.data.params.get("val_size", 0) or 0)
    value = score(run)
    if not images or value < 0:
        return ""
    return f" +- {standard_error(value, images):.4f} (1 SE, {images:,} validation images)"


def recipe_trial(run: Any, family: str) -> Any:
    """The completed trial of `run`'s sweep that ran `family`'s recipe, if there is one."""
    parent = run.data.tags.get(names.PARENT)
    if parent is None:
        return None
    runs = tracking.search_runs(
        {
            names.PARENT: parent,
            names.KIND: names.KIND_TRIAL,
            names.BASELINE: "yes",
            names.FAMILY: family,
            names.STATE: names.COMPLETE,
        },
        max_results=1,
    )
    return runs[0] if runs else None


def measured_baseline(recipe: str, dataset: str | None) -> Any:
    """The newest completed baseline run of `recipe` (on `dataset`), if any."""
    runs = tracking.search_runs(
        {
            names.KIND: names.KIND_BASELINE,
            names.BASELINE: recipe,
            names.STATE: names.COMPLETE,
            names.DATASET: dataset,
        },
        newest_first=True,
        max_results=1,
    )
    return runs[0] if runs else None


def export(run: Any, path: str | Path, force: bool = False) -> Path:
    """Writes the run's model as `.keras`, with its class names inside; an existing file
    only with `force`."""
    path = Path(path)
    if path.suffix != ".keras":
        raise SweeperError(f"--export expects a path ending in .keras. Received: {path}")
    if path.exists() and not force:
        raise SweeperError(f"{path} exists; --force overwrites it")
    logged = tracking.load_model(run.info.run_id)
    if logged is None:
        if why := run.data.tags.get(names.MODEL_DROPPED):
            raise SweeperError(
                f"the model of run {run.info.run_id} was deleted at its sweep's end ({why}); "
                f"`sweeper rerun {run.info.run_id}` trains it again"
            )
        raise SweeperError(f"Run {run.info.run_id} logged no model")
    model, class_names = logged
    metadata = {
        "class_names": class_names,
        "run_id": run.info.run_id,
        "family": run.data.params.get("family"),
        "dataset": run.data.params.get("dataset"),
        "test_accuracy": run.data.metrics.get(names.TEST_ACCURACY),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(METADATA, json.dumps(metadata, indent=2))
    except OSError as error:  # unwritable folder, full disk: no half-written model left
        if path.is_file():
            path.unlink()
        raise SweeperError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        if METADATA not in archive.namelist():
            return {}
        return json.loads(archive.read(METADATA))


def predict(model_path: str | Path, images: list[str]) -> list[tuple[str, str, float]]:
    """(image, class name, probability) for each image file."""
    import keras
    from PIL import Image

    if not Path(model_path).is_file():
        raise SweeperError(f"No model file at {model_path}")
    model = keras.models.load_model(model_path, safe_mode=True)
    names = read_metadata(model_path).get("class_names")
    height, width, channels = model.input_shape[1:]
    batch = []
    for image in images:
        try:
            with Image.open(image) as img:
                pixels = img.convert("L" if channels == 1 else "RGB").resize((width, height))
            batch.append(np.asarray(pixels, dtype=np.uint8).reshape(height, width, channels))
        except (OSError, ValueError) as error:
            raise SweeperError(f"Cannot read image {image}: {error}") from None
    probs = model.predict(np.stack(batch), verbose=0)
    best = probs.argmax(axis=1)
    return [
        (image, names[i] if names else str(i), float(probs[row, i]))
        for row, (image, i) in enumerate(zip(images, best))
    ]


def rerun(run_id: str, data_dir: str | None = None) -> tuple:
    """Trains a logged run again from its params and seed, as a new run tagged rerun_of."""
    from sweeper import data, runner

    original = tracking.get_run(run_id)
    if original is None:
        raise SweeperError(f"No run {run_id} in {tracking.tracking_uri()}")
    p = original.data.params
    if p.get("family") not in schema.FAMILIES:
        raise SweeperError(f"Run {run_id} is not a sweeper trial (it has no family param)")
    family = p["family"]
    params = {k: schema.from_text(family, k, p[k]) for k in schema.params_of(family) if k in p}
    image_size = tuple(json.loads(p["image_size"])) if "image_size" in p else None
    dataset = data.load(
        p.get("data_source", p["dataset"]),
        data_dir=data_dir,
        limit=None if p.get("data_limit", "None") == "None" else int(p["data_limit"]),
        val_fraction=_fraction(p.get("validation_split", "auto")),
        seed=int(p.get("data_seed", p.get("seed", 0))),
        **({"image_size": image_size} if image_size else {}),
        image_dir=p.get("image_dir"),
    )
    dataset = dataclasses.replace(dataset, name=original.data.tags.get(names.DATASET, dataset.name))
    tags = {
        names.KIND: original.data.tags.get(names.KIND, names.KIND_TRIAL),
        names.RERUN_OF: run_id,
    }
    for key in (names.BASELINE, names.DOCUMENTED_ACCURACY, names.STUDY, names.ENGINE):
        if key in original.data.tags:
            tags[key] = original.data.tags[key]
    result, run = runner.tracked_trial(
        family,
        params,
        dataset,
        experiment=original.info.experiment_id,
        run_name=f"{original.info.run_name} (rerun)",
        epochs=int(p["max_epochs"]),
        seed=int(p["seed"]),
        tags=tags,
        precision=p.get("precision", "float32"),
    )
    return original, result, run


def _fraction(logged: str) -> float | None:
    """A logged `validation_split`: a fraction, or "auto" (the default split)."""
    return None if logged in ("auto", "None") else float(logged)
