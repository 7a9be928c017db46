"""Tracking: the only package that imports MLflow.

`names` holds every tag and metric name, `query` builds quoted search filters, `store` finds
and writes runs (the sweep's parent among them), `trial` writes one trial's run.
"""

from __future__ import annotations

from sweeper.tracking import names
from sweeper.tracking.store import (
    ParentRun,
    TrackingError,
    children,
    configure,
    default_uri,
    end_lost_run,
    experiment_id,
    get_run,
    log_folder,
    metric_history,
    search_runs,
    tracking_uri,
    trial_of,
)
from sweeper.tracking.trial import (
    EpochLogger,
    TrialRun,
    drop_model,
    flush,
    load_model,
    log_dataset,
    log_result,
    model_requirements,
    model_uri,
    trial_run,
)

__all__ = [
    "EpochLogger",
    "ParentRun",
    "TrackingError",
    "TrialRun",
    "children",
    "configure",
    "default_uri",
    "drop_model",
    "end_lost_run",
    "experiment_id",
    "flush",
    "get_run",
    "load_model",
    "log_dataset",
    "log_folder",
    "log_result",
    "metric_history",
    "model_requirements",
    "model_uri",
    "names",
    "search_runs",
    "trial_run",
    "tracking_uri",
    "trial_of",
]
