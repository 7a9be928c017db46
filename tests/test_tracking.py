import keras
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from sweeper import data, runner, tracking


def test_a_trial_run_holds_params_curves_model_and_plots(workdir, data_dir):
    ds = data.load("mnist", data_dir=data_dir)
    tracking.configure()
    experiment = tracking.experiment_id("test-tracking")
    result, run = runner.tracked_trial(
        "cnn", {"filters": 4, "dense_units": 8, "batch_size": 32}, ds, experiment=experiment,
        run_name="cnn #0", epochs=3, seed=1, tags={"kind": "trial"})
    client = MlflowClient()
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "cnn #0"
    params = logged.data.params
    assert params["family"] == "cnn" and params["filters"] == "4" and params["seed"] == "1"
    assert params["optimizer"] == "adam" and params["train_size"] == "180"
    assert {("kind", "trial"), ("family", "cnn"), ("dataset", "mnist"), ("state", "complete")} <= set(
        logged.data.tags.items())
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                "epoch_seconds"):
        steps = [m.step for m in client.get_metric_history(run.run_id, key)]
        assert steps == [1, 2, 3], key
    metrics = logged.data.metrics
    assert metrics["test_accuracy"] == pytest.approx(result.test["test_accuracy"])
    for key in ("test_loss", "test_precision", "test_recall", "test_f1", "test_roc_auc",
                "params_count", "train_seconds", "images_per_second"):
        assert key in metrics, key
    artifacts = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"curves.png", "confusion_matrix.png", "model_summary.txt"} <= artifacts
    model = mlflow.keras.load_model(tracking.model_uri(run.run_id))
    assert model.count_params() == metrics["params_count"]


def test_a_run_that_raises_ends_failed_with_the_error(workdir):
    tracking.configure()
    experiment = tracking.experiment_id("test-tracking")
    with pytest.raises(RuntimeError):
        with tracking.trial_run(experiment, "boom", {"a": 1}, {"kind": "trial"}) as run:
            raise RuntimeError("out of memory")
    logged = MlflowClient().get_run(run.run_id)
    assert logged.info.status == "FAILED"
    assert logged.data.tags["state"] == "failed"
    assert logged.data.tags["error"] == "RuntimeError: out of memory"


def test_default_store_is_sqlite_under_mlruns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.configure()
    assert uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert (tmp_path / "mlruns").is_dir()


def test_epoch_printer_writes_plain_lines_off_a_terminal():
    import io

    stream = io.StringIO()
    printer = runner.epoch_printer("cnn #3", 10, stream=stream)
    assert type(printer).on_train_batch_end is keras.callbacks.Callback.on_train_batch_end
    printer.set_params({"steps": 5})
    printer.on_epoch_begin(1)
    printer.on_epoch_end(1, {"loss": 0.25, "val_loss": 0.5, "val_accuracy": 0.875})
    assert stream.getvalue().startswith(
        "  cnn #3 epoch 2/10 loss=0.2500 val_loss=0.5000 val_accuracy=0.8750 (")
    assert "\r" not in stream.getvalue() and "batch" not in stream.getvalue()


def test_epoch_printer_shows_live_batches_on_a_terminal():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    printer = runner.epoch_printer("mlp #1", 2, stream=stream)
    assert printer.async_safe
    printer.set_params({"steps": 5})
    printer.on_epoch_begin(0)
    printer.on_train_batch_end(0, {"loss": 0.5})
    printer.on_epoch_end(0, {"loss": 0.25})
    assert "\r  mlp #1 epoch 1/2 batch 1/5 loss=0.5000" in stream.getvalue()
    assert stream.getvalue().endswith("\x1b[K\n")
