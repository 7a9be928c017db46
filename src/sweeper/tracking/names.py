"""Every tag and metric name sweeper writes to MLflow and reads back, in one place."""

from __future__ import annotations

# Tags on every sweeper run.
KIND = "kind"  # one of the kinds below
DATASET = "dataset"
STUDY = "study"
ENGINE = "engine"
# Tags on trial and baseline runs.
FAMILY = "family"
STATE = "state"  # one of the states below
TRIAL_NUMBER = "trial_number"
BASELINE = "baseline"  # on a trial: "yes"/"no"; on a sweep or baseline run: the recipe's name
DOCUMENTED_ACCURACY = "documented_accuracy"
RERUN_OF = "rerun_of"
REFIT_OF = "refit_of"  # on a refit run: the run id of the trial it retrains
REFIT_CHOICE = "refit_choice"  # on a refit run: why its trial (the best, or the recipe)
ERROR = "error"
MODEL_DROPPED = "model_dropped"  # why its model was deleted (a sweep's keep_models)
STOPPED_BY = "stopped_by"  # why a trial stopped before its epochs: "timeout" or "target"
PARENT = "mlflow.parentRunId"  # MLflow's own tag for nested runs
DESCRIPTION = "mlflow.note.content"  # a run's description, shown on its page
# MLflow 3's UI opens an experiment on its GenAI traces unless this tag says model training.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
DATASET_IDENTITY = "sweeper.dataset"  # on an experiment: its dataset (`data.identity`)
# Tags on the sweep's parent run.
BEST_RUN = "best_run"
TARGET_REACHED_BY = "target_reached_by"
REFIT_RUN = "refit_run"
NO_SEARCH = "no_search"  # why the sweep ran only its recipe's timing trial
FAMILY_KEPT = "family_kept"  # the one family sampled once the others cannot compete, and why

KIND_SWEEP, KIND_TRIAL, KIND_BASELINE, KIND_REFIT = "sweep", "trial", "baseline", "refit"
COMPLETE, PRUNED, FAILED = "complete", "pruned", "failed"
# How MLflow's run status shows each state in its UI.
RUN_STATUS = {COMPLETE: "FINISHED", PRUNED: "KILLED", FAILED: "FAILED"}

# Metrics.
TEST_ACCURACY = "test_accuracy"
BEST_VAL_ACCURACY = "best_val_accuracy"  # the saved model's validation accuracy
MODEL_EPOCH = "model_epoch"  # the epoch whose weights the saved model holds
BEST_TEST_ACCURACY = "best_test_accuracy"
TEST_ACCURACY_TTA = "test_accuracy_tta"
REFIT_TEST_ACCURACY = "refit_test_accuracy"
BASELINE_DOCUMENTED_ACCURACY = "baseline_documented_accuracy"
TARGET_REACHED_SECONDS = "target_reached_seconds"
PARAMS_COUNT = "params_count"  # all of them; `params`: the trainable ones
# What a model costs (`train.costs`), logged by every run and weighed by `objectives:`.
COSTS = ("params", "model_mb", "latency_ms")
PARETO = "pareto"  # on a trial of a multi-objective sweep: "yes" on the front, else "no"
FEASIBLE = "feasible"  # on a trial of a sweep with constraints: "yes" or "no"
TRAIN_SECONDS = "train_seconds"
IMAGES_PER_SECOND = "images_per_second"
EPOCHS = "epochs"
EPOCH_SECONDS = "epoch_seconds"
VAL_SECONDS = "val_seconds"  # of an epoch's seconds, those its validation took
LEARNING_RATE = "learning_rate"


def best(metric: str) -> str:
    """The parent run's best-so-far metric for the sweep's objective `metric`."""
    return f"best_{metric}"


# Artifacts.
SWEEP_FILE = "sweep.yaml"
TRACEBACK = "traceback.txt"  # on a failed trial's run
CLASS_NAMES = "class_names.json"
MODEL = "model"
