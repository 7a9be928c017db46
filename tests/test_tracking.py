import mlflow
import pytest
from mlflow.tracking import MlflowClient

from sweeper import data, runner, tracking


def test_a_trial_run_holds_params_curves_model_and_plots(workdir, data_dir):
    ds = data.load("mnist", data_dir=data_dir)
    tracking.configure()
    experiment = tracking.experiment_id("test-tracking")
    result, run = runner.tracked_trial(
        "cnn",
        {"filters": 4, "dense_units": 8, "batch_size": 32},
        ds,
        experiment=experiment,
        run_name="cnn #0",
        epochs=3,
        seed=1,
        tags={"kind": "trial"},
    )
    client = MlflowClient()
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "cnn #0"
    params = logged.data.params
    assert params["family"] == "cnn" and params["filters"] == "4" and params["seed"] == "1"
    assert params["optimizer"] == "adam" and params["train_size"] == "160"
    assert {
        ("kind", "trial"),
        ("family", "cnn"),
        ("dataset", "mnist"),
        ("state", "complete"),
    } <= set(logged.data.tags.items())
    for key in (
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "epoch_seconds",
        "val_seconds",
    ):
        steps = [m.step for m in client.get_metric_history(run.run_id, key)]
        assert steps == [1, 2, 3], key
    epochs, validating = (
        [m.value for m in client.get_metric_history(run.run_id, key)]
        for key in ("epoch_seconds", "val_seconds")
    )
    assert all(0 < v < e for e, v in zip(epochs, validating, strict=True))
    metrics = logged.data.metrics
    assert metrics["test_accuracy"] == pytest.approx(result.test["test_accuracy"])
    for key in (
        "test_loss",
        "test_precision",
        "test_recall",
        "test_f1",
        "test_roc_auc",
        "params_count",
        "train_seconds",
        "images_per_second",
    ):
        assert key in metrics, key
    artifacts = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"curves.png", "confusion_matrix.png", "model_summary.txt"} <= artifacts
    model = mlflow.keras.load_model(tracking.model_uri(run.run_id))
    assert model.count_params() == metrics["params_count"]


@pytest.mark.parametrize("background", [False, True])
def test_a_run_that_raises_ends_failed_with_the_error(workdir, background):
    tracking.configure()
    experiment = tracking.experiment_id("test-tracking")
    recorder = tracking.TrialRecorder(
        "boom",
        lambda: tracking.open_run(experiment, "boom", {"a": 1}, {"kind": "trial"}),
        background=background,
    )
    recorder.start()
    try:
        raise RuntimeError("out of memory")
    except RuntimeError as error:
        recorder.fail(error)
    tracking.flush()
    logged = MlflowClient().get_run(recorder.run_id)
    assert logged.info.status == "FAILED"
    assert logged.data.tags["state"] == "failed"
    assert logged.data.tags["error"] == "RuntimeError: out of memory"
    assert "RuntimeError: out of memory" in mlflow.artifacts.load_text(
        f"runs:/{recorder.run_id}/traceback.txt"
    )


def test_default_store_is_sqlite_under_mlruns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.configure()
    assert uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert (tmp_path / "mlruns").is_dir()


def test_a_study_named_with_a_quote_is_swept_and_read_back(workdir):
    from click.testing import CliRunner

    from conftest import sweep_file
    from sweeper import results
    from sweeper.cli import main

    path = sweep_file(workdir, "a'b", budget={"trials": 1, "max_epochs": 1})
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    [parent] = tracking.search_runs({"kind": "sweep", "study": "a'b"})
    [child] = tracking.children(parent.info.run_id)
    assert child.data.tags["study"] == "a'b"
    assert results.best_run(results.Selection(sweep="a'b")).info.run_id == child.info.run_id
    again = CliRunner().invoke(main, ["sweep", str(path), "--trials", "2"])
    assert again.exit_code == 0, again.output
    assert len(tracking.children(parent.info.run_id)) == 2  # resumed under the same parent


def test_experiments_are_tagged_for_model_training_so_the_ui_opens_on_runs(workdir):
    tracking.configure()
    created = tracking.experiment_id("test-kind-new")
    assert mlflow.get_experiment(created).tags["mlflow.experimentKind"] == (
        "custom_model_development"
    )
    older = mlflow.create_experiment("test-kind-older")  # as sweeper made them before
    assert tracking.experiment_id("test-kind-older") == older
    assert mlflow.get_experiment(older).tags["mlflow.experimentKind"] == (
        "custom_model_development"
    )


def test_two_folders_of_one_name_are_not_mixed_in_one_experiment(workdir):
    from sweeper.errors import SweeperError

    tracking.configure()
    first, second = data.identity("folder:a/flowers"), data.identity("folder:b/flowers")
    assert first.startswith("folder:/") and first != second
    created = tracking.experiment_id("flowers-identity", first)
    assert tracking.experiment_id("flowers-identity", first) == created
    with pytest.raises(SweeperError, match="holds the runs of folder:.*a/flowers; folder:"):
        tracking.experiment_id("flowers-identity", second)
