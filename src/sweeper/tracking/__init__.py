"""Tracking: the only package that imports MLflow.

`names` holds every tag and metric name, `query` builds quoted search filters, `store` finds
and writes runs (the sweep's parent among them), `trial` writes one trial's run, `recorder`
hands a trial's writes to the writer thread, `epochs` is the Keras callback that feeds it.
`store` and `trial` (and MLflow with them) and `epochs` (and Keras) are imported on first
use: a sweep starts training before MLflow is loaded, `sweeper ui` and `best` load no Keras.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sweeper.tracking import names
from sweeper.tracking.recorder import (
    TrialRecorder,
    disk_full_on_writer,
    flush,
    on_writer,
    submit,
    wait_for_models,
    warn_on_error,
)

if TYPE_CHECKING:
    from sweeper.tracking.epochs import EpochLogger
    from sweeper.tracking.store import (
        ParentRun,
        TrackingError,
        children,
        configure,
        default_uri,
        end_lost_run,
        experiment_id,
        experiments,
        get_run,
        log_folder,
        mark_front,
        metric_history,
        own_experiment,
        search_runs,
        set_tags,
        tracking_uri,
        trial_of,
    )
    from sweeper.tracking.trial import (
        TrialRun,
        drop_model,
        load_model,
        model_requirements,
        model_uri,
        open_run,
    )

_LAZY = {
    "EpochLogger": "epochs",
    **dict.fromkeys(
        (
            "ParentRun",
            "TrackingError",
            "children",
            "configure",
            "default_uri",
            "end_lost_run",
            "experiment_id",
            "experiments",
            "get_run",
            "log_folder",
            "mark_front",
            "metric_history",
            "own_experiment",
            "search_runs",
            "set_tags",
            "tracking_uri",
            "trial_of",
        ),
        "store",
    ),
    **dict.fromkeys(
        ("TrialRun", "drop_model", "load_model", "model_requirements", "model_uri", "open_run"),
        "trial",
    ),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = [
    "EpochLogger",
    "ParentRun",
    "TrackingError",
    "TrialRecorder",
    "TrialRun",
    "children",
    "configure",
    "default_uri",
    "disk_full_on_writer",
    "drop_model",
    "end_lost_run",
    "experiment_id",
    "experiments",
    "flush",
    "get_run",
    "load_model",
    "log_folder",
    "mark_front",
    "metric_history",
    "model_requirements",
    "model_uri",
    "names",
    "on_writer",
    "open_run",
    "own_experiment",
    "search_runs",
    "set_tags",
    "submit",
    "tracking_uri",
    "trial_of",
    "wait_for_models",
    "warn_on_error",
]
