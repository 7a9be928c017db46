"""One tracked trial: the run it leaves whatever its ending, and the progress it prints."""

import keras
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from sweeper import data, runner, tracking


def mlp_trial(data_dir, epochs, **kwargs):
    """A tiny mlp trial logged in its own experiment."""
    tracking.configure()
    return runner.tracked_trial(
        "mlp",
        {"units": 8},
        data.load("mnist", data_dir=data_dir),
        experiment=tracking.experiment_id("test-runner"),
        run_name="mlp #0",
        epochs=epochs,
        seed=0,
        tags={"kind": "trial"},
        **kwargs,
    )


def test_a_pruned_trial_keeps_its_curves_and_no_model(workdir, data_dir):
    result, run = mlp_trial(data_dir, 4, should_prune=lambda epoch, logs: epoch == 1)
    logged = MlflowClient().get_run(run.run_id)
    assert result.pruned and logged.info.status == "KILLED"
    assert logged.data.tags["state"] == "pruned"
    assert [s for s, _ in tracking.metric_history(run.run_id, "val_accuracy")] == [1, 2]
    assert tracking.model_uri(run.run_id) is None


def test_a_trial_whose_plots_cannot_be_written_ends_its_run_failed(workdir, data_dir, monkeypatch):
    from sweeper import plots

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "curves_figure", full_disk)
    with pytest.raises(OSError, match="No space left"):
        mlp_trial(data_dir, 1)  # a baseline's or a refit's: written before it returns
    assert mlflow.active_run() is None  # the next run can start
    (run,) = MlflowClient().search_runs(
        [tracking.experiment_id("test-runner")],
        "tags.state = 'failed'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert run.info.status == "FAILED" and "No space left" in run.data.tags["error"]


def test_every_parameter_of_the_family_is_logged_with_its_default(workdir, data_dir):
    from sweeper import schema

    _, run = mlp_trial(data_dir, 1)
    params = mlflow.get_run(run.run_id).data.params
    for name, p in schema.params_of("mlp").items():
        assert params[name] == str(8 if name == "units" else p.default), name


def test_epoch_printer_writes_plain_lines_off_a_terminal():
    import io

    stream = io.StringIO()
    printer = runner.epoch_printer("cnn #3", 10, stream=stream)
    assert type(printer).on_train_batch_end is keras.callbacks.Callback.on_train_batch_end
    printer.set_params({"steps": 5})
    printer.on_epoch_begin(1)
    printer.on_epoch_end(1, {"loss": 0.25, "val_loss": 0.5, "val_accuracy": 0.875})
    assert stream.getvalue().startswith(
        "  cnn #3 epoch 2/10 loss=0.2500 val_loss=0.5000 val_accuracy=0.8750 ("
    )
    assert "\r" not in stream.getvalue() and "batch" not in stream.getvalue()


def test_epoch_printer_counts_to_the_epochs_a_deadline_re_planned():
    import io

    stream = io.StringIO()
    printer = runner.epoch_printer("resnet #0 refit", 12, stream=stream)
    params = {"steps": 5}  # fit's, shared by its callbacks
    printer.set_params(params)
    printer.on_epoch_begin(0)
    printer.on_epoch_end(0, {"loss": 0.5})
    params["epochs_added"] = 2  # as `train.Deadline` re-plans after that epoch
    printer.on_epoch_begin(1)
    printer.on_epoch_end(1, {"loss": 0.25})
    printer.set_params({"steps": 5})  # a second phase's fit: the re-plan stands
    printer.on_epoch_end(2, {"loss": 0.2})
    lines = stream.getvalue().splitlines()
    assert [line.split(" loss")[0] for line in lines] == [
        "  resnet #0 refit epoch 1/12",
        "  resnet #0 refit epoch 2/14",
        "  resnet #0 refit epoch 3/14",
    ]


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


def test_the_next_trial_resets_keras_only_after_the_last_model_is_saved(
    workdir, data_dir, monkeypatch
):
    """A model is saved on the writer thread while the next trial trains; that trial's
    `clear_session` (which resets Keras' global state) waits for the save to be over."""
    import time

    from sweeper.tracking import trial

    events = []
    save = trial.log_model

    def slow_save(*args, **kwargs):
        time.sleep(1.0)  # a large model on a slow disk
        save(*args, **kwargs)
        events.append("model saved")

    clear = keras.backend.clear_session

    def clear_session(*args, **kwargs):
        events.append("clear_session")
        clear(*args, **kwargs)

    monkeypatch.setattr(trial, "log_model", slow_save)
    monkeypatch.setattr(keras.backend, "clear_session", clear_session)
    for _ in range(2):
        mlp_trial(data_dir, 1, background=True)
    tracking.flush()
    assert events == ["clear_session", "model saved", "clear_session", "model saved"]
