"""Results: find the best run, export its model, predict with it, rerun a logged trial.

An exported `.keras` file is Keras' own format with one extra entry, `sweeper.json` (class
names, the run it came from); Keras ignores it when loading, `predict` reads it.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np

from sweeper import baselines, tracking, train
from sweeper.errors import SweeperError

METADATA = "sweeper.json"
SELECTION_METRICS = ("val_accuracy", "test_accuracy")


@dataclass
class Selection:
    dataset: str | None = None
    sweep: str | None = None
    parent: str | None = None
    family: str | None = None
    metric: str = "val_accuracy"


def finished_runs(selection: Selection, kinds=("trial", "baseline")) -> list:
    """Completed trial (and baseline) runs matching the selection, best first."""
    if selection.metric not in SELECTION_METRICS:
        raise SweeperError(f"--metric must be one of {', '.join(SELECTION_METRICS)}. "
                           f"Received: {selection.metric}")
    filters = ["attributes.status = 'FINISHED'", "tags.state = 'complete'"]
    if selection.sweep:
        filters.append(f"tags.study = '{selection.sweep}'")
    if selection.parent:
        filters.append(f"tags.`mlflow.parentRunId` = '{selection.parent}'")
    if selection.family:
        filters.append(f"tags.family = '{selection.family}'")
    if selection.dataset:
        filters.append(f"tags.dataset = '{selection.dataset}'")
    runs = tracking.search_all_runs(" and ".join(filters), max_results=5000)
    runs = [r for r in runs if r.data.tags.get("kind") in kinds]
    return sorted(runs, key=lambda r: score(r, selection.metric), reverse=True)


def score(run, metric: str = "val_accuracy") -> float:
    """Validation accuracy: the best epoch's (runs before that metric existed: the last's)."""
    m = run.data.metrics
    if metric == "val_accuracy":
        return m.get("best_val_accuracy", m.get("val_accuracy", -1.0))
    return m.get(metric, -1.0)


def documented(recipe, dataset: str | None) -> str:
    """The recipe's documented accuracy, where it was documented on this dataset."""
    if recipe.dataset not in (None, dataset):
        return f"n/a (documented on {recipe.dataset})"
    return f"{recipe.documented_accuracy:.4f}" if recipe.documented_accuracy else "not printed"


def best_run(selection: Selection):
    runs = finished_runs(selection)
    if not runs:
        described = ", ".join(f"{k}={v}" for k, v in vars(selection).items()
                              if v and k != "metric") or "any dataset"
        raise SweeperError(f"No finished run matches ({described}); run a sweep or a "
                           "baseline first")
    return runs[0]


def describe(run) -> str:
    """The best run, with its family's documented and measured baseline beside it."""
    p, m = run.data.params, run.data.metrics
    family, dataset = p.get("family", "?"), p.get("data_source", p.get("dataset"))
    lines = [
        f"best run  {run.info.run_id}  ({run.info.run_name})",
        f"family    {family} on {p.get('dataset')}",
        f"accuracy  validation {score(run):.4f}, "
        f"test {m.get('test_accuracy', float('nan')):.4f}",
        "params    " + ", ".join(f"{k}={v}" for k, v in sorted(p.items())
                                  if k in train.defaults(family)),
    ]
    recipe = baselines.for_family(family, dataset)
    if recipe:
        measured = measured_baseline(recipe.name, p.get("dataset"))
        seen = (f"{measured.data.metrics['test_accuracy']:.4f} (run {measured.info.run_id})"
                if measured else "not run yet (sweeper baseline " + recipe.name + ")")
        lines.append(f"baseline  {recipe.name}: documented {documented(recipe, dataset)}, "
                     f"measured {seen}")
    return "\n".join(lines)


def measured_baseline(recipe: str, dataset: str | None):
    """The newest completed baseline run of `recipe` (on `dataset`), if any."""
    query = f"tags.kind = 'baseline' and tags.baseline = '{recipe}' and tags.state = 'complete'"
    if dataset:
        query += f" and tags.dataset = '{dataset}'"
    runs = tracking.search_all_runs(query, order_by=["attributes.start_time DESC"],
                                    max_results=1)
    return runs[0] if runs else None


def export(run, path: str | Path) -> Path:
    """Writes the run's model as `.keras`, with its class names inside."""
    path = Path(path)
    if path.suffix != ".keras":
        raise SweeperError(f"--export expects a path ending in .keras. Received: {path}")
    uri = tracking.model_uri(run.info.run_id)
    if uri is None:
        raise SweeperError(f"Run {run.info.run_id} logged no model")
    model = mlflow.keras.load_model(uri)
    class_names = mlflow.artifacts.load_dict(
        f"runs:/{run.info.run_id}/class_names.json")["class_names"]
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    metadata = {"class_names": class_names, "run_id": run.info.run_id,
                "family": run.data.params.get("family"),
                "dataset": run.data.params.get("dataset"),
                "test_accuracy": run.data.metrics.get("test_accuracy")}
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(METADATA, json.dumps(metadata, indent=2))
    return path


def read_metadata(path: str | Path) -> dict:
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
                img = img.convert("L" if channels == 1 else "RGB").resize((width, height))
                batch.append(np.asarray(img, dtype=np.uint8).reshape(height, width, channels))
        except (OSError, ValueError) as error:
            raise SweeperError(f"Cannot read image {image}: {error}") from None
    probs = model.predict(np.stack(batch), verbose=0)
    best = probs.argmax(axis=1)
    return [(image, names[i] if names else str(i), float(probs[row, i]))
            for row, (image, i) in enumerate(zip(images, best))]


def rerun(run_id: str, data_dir=None) -> tuple:
    """Trains a logged run again from its params and seed, as a new run tagged rerun_of."""
    from sweeper import data, runner

    try:
        original = mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise SweeperError(f"No run {run_id} in {mlflow.get_tracking_uri()}") from None
    p = original.data.params
    if "family" not in p:
        raise SweeperError(f"Run {run_id} is not a sweeper trial (it has no family param)")
    family = p["family"]
    params = {k: _typed(p[k], default) for k, default in train.defaults(family).items()
              if k in p}
    options = {"limit": _typed(p.get("data_limit", "None"), 0),
               "val_fraction": float(p.get("validation_split", 0.1)),
               "seed": int(p.get("data_seed", p.get("seed", 0)))}
    if "image_size" in p:
        options["image_size"] = tuple(json.loads(p["image_size"]))
    dataset = data.load(p.get("data_source", p["dataset"]), data_dir=data_dir, **options)
    tags = {"kind": original.data.tags.get("kind", "trial"), "rerun_of": run_id}
    for key in ("baseline", "documented_accuracy", "study", "engine"):
        if key in original.data.tags:
            tags[key] = original.data.tags[key]
    result, run = runner.tracked_trial(
        family, params, dataset, experiment=original.info.experiment_id,
        run_name=f"{original.info.run_name} (rerun)", epochs=int(p["max_epochs"]),
        seed=int(p["seed"]), tags=tags, precision=p.get("precision", "float32"))
    return original, result, run


def _typed(text: str, default):
    """Params come back from MLflow as strings; the family's default says the type."""
    if text == "None":
        return None
    if isinstance(default, bool):
        return text == "True"
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    return text
