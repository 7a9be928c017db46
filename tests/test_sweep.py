"""Whole sweeps on tiny data, through the CLI, for both engines."""

import math
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from conftest import TINY_SWEEP, sweep_file
from sweeper import config, metrics, runner
from sweeper.cli import main
from sweeper.engines import optuna_engine
from sweeper.errors import SweeperError
from sweeper.sweep import run_sweep


def children_of(parent_id):
    runs = MlflowClient().search_runs(
        [mlflow.get_run(parent_id).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    return sorted(runs, key=lambda r: int(r.data.tags["trial_number"]))


def parent_of(study):
    runs = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("mnist").experiment_id],
        f"tags.kind = 'sweep' and tags.study = '{study}'",
    )
    assert len(runs) == 1
    return runs[0]


@pytest.mark.parametrize("engine", ["optuna", "keras-tuner"])
def test_sweep_logs_parent_and_children_then_resumes(workdir, engine):
    study = f"resume-{engine}"
    path = sweep_file(
        workdir, study, engine=engine, sampler="tpe" if engine == "optuna" else "random"
    )
    result = CliRunner().invoke(main, ["sweep", str(path), "--trials", "3"])
    assert result.exit_code == 0, result.output
    parent = parent_of(study)
    children = children_of(parent.info.run_id)
    assert [c.data.tags["trial_number"] for c in children] == ["0", "1", "2"]
    first = children[0]
    assert first.data.tags["baseline"] == "yes" and first.info.run_name == "cnn #0"
    assert first.data.params["filters"] == "32" and first.data.params["dense_units"] == "100"
    for child in children:
        assert child.data.tags["engine"] == engine and child.data.tags["state"] == "complete"
        assert child.data.params["family"] in ("cnn", "mlp")
        steps = MlflowClient().get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in steps] == [1]
        assert child.outputs.model_outputs, "each child logs its model"
        (trained_on,) = child.inputs.dataset_inputs  # MLflow's Dataset column
        assert trained_on.dataset.name == "mnist" and trained_on.dataset.digest
        assert [t.value for t in trained_on.tags] == ["training"]
    best = max(children, key=lambda c: c.data.metrics["best_val_accuracy"])
    assert parent.data.tags["best_run"] == f"{best.info.run_name} ({best.info.run_id})"
    assert parent.data.metrics["best_val_accuracy"] == best.data.metrics["best_val_accuracy"]
    assert parent.data.metrics["baseline_documented_accuracy"] == 0.985
    assert "sweep.yaml" in {a.path for a in MlflowClient().list_artifacts(parent.info.run_id)}

    result = CliRunner().invoke(main, ["sweep", str(path), "--trials", "5"])
    assert result.exit_code == 0, result.output
    children = children_of(parent_of(study).info.run_id)
    numbers = [int(c.data.tags["trial_number"]) for c in children]
    assert numbers == [0, 1, 2, 3, 4]  # numbering continues; nothing ran twice


@pytest.mark.parametrize("engine", ["optuna", "keras-tuner"])
def test_a_met_target_stops_the_trial_and_the_sweep(workdir, engine):
    study = f"target-{engine}"
    path = sweep_file(
        workdir,
        study,
        engine=engine,
        baseline_first=False,
        sampler="random",
        budget={"trials": 4, "max_epochs": 3, "target": 0.01},
    )
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    assert "target val_accuracy 0.01 reached by" in result.output
    parent = parent_of(study)
    children = children_of(parent.info.run_id)
    assert len(children) == 1  # of a budget of 4
    assert children[0].data.tags["baseline"] == "no"
    assert children[0].data.metrics["epochs"] == 1  # of 3: it stopped where it met the target
    assert children[0].data.tags["stopped_by"] == "target"
    assert parent.data.tags["target_reached_by"].startswith(children[0].info.run_name)
    assert parent.data.metrics["target_reached_seconds"] > 0

    result = CliRunner().invoke(main, ["sweep", str(path), "--trials", "6"])
    assert result.exit_code == 0, result.output
    assert "already met its target" in result.output
    assert len(children_of(parent.info.run_id)) == 1


@pytest.mark.parametrize(
    "engine,sampler",
    [("optuna", "random"), ("keras-tuner", "random"), ("keras-tuner", "hyperband")],
)
def test_a_passed_timeout_starts_no_more_trials(workdir, monkeypatch, engine, sampler):
    from sweeper import policy

    study = f"timeout-{engine}-{sampler}"
    path = sweep_file(
        workdir,
        study,
        engine=engine,
        sampler=sampler,
        budget={"trials": 4, "max_epochs": 2, "timeout_minutes": 10},
    )
    clock = [1_000_000.0]
    monkeypatch.setattr(policy, "now", lambda: clock[0])
    judge = policy.Policy.stop_after_epoch

    def ten_minutes_later(self, *args, **kwargs):  # the first epoch took the whole timeout
        clock[0] += 601
        return judge(self, *args, **kwargs)

    monkeypatch.setattr(policy.Policy, "stop_after_epoch", ten_minutes_later)
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    [child] = children_of(parent_of(study).info.run_id)  # the one trial, and no other
    assert child.data.metrics["epochs"] == 1 and child.data.tags["stopped_by"] == "timeout"
    assert child.data.tags["state"] == "complete"


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_a_pruned_trial_is_logged_with_its_curves_so_far(workdir, monkeypatch):
    monkeypatch.setattr(optuna_engine, "_pruner", lambda spec: AlwaysPrune())
    spec = config.load(
        sweep_file(workdir, "pruning", pruner="median", budget={"trials": 2, "max_epochs": 3})
    )
    parent = run_sweep(spec)
    children = children_of(parent)
    assert len(children) == 2
    for child in children:
        assert child.data.tags["state"] == "pruned" and child.info.status == "KILLED"
        steps = MlflowClient().get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in steps] == [1]  # stopped after the first report
    study = optuna.load_study(study_name="pruning", storage=optuna_engine.make_storage(None))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2


def test_a_diverged_trial_is_pruned_not_failed_and_the_sweep_goes_on(workdir):
    families = {
        **TINY_SWEEP["families"],
        "mlp": {"optimizer": "sgd", "momentum": 0.0, "learning_rate": 1.0e12},
    }
    spec = config.load(
        sweep_file(workdir, "nan", families=families, budget={"trials": 2, "max_epochs": 2})
    )
    study = optuna.create_study(study_name="nan", storage=optuna_engine.make_storage(None))
    study.enqueue_trial({"family": "mlp"})  # runs before the cnn baseline
    parent = run_sweep(spec)
    children = children_of(parent)
    assert [c.info.run_name for c in children] == ["mlp #0", "cnn #1"]
    diverged = children[0]
    assert diverged.data.tags["state"] == "pruned" and diverged.info.status == "KILLED"
    assert diverged.data.tags["stopped_by"] == "diverged"
    assert children[1].data.tags["state"] == "complete"
    assert "stopped_by" not in children[1].data.tags
    states = [
        t.state
        for t in optuna.load_study(
            study_name="nan", storage=optuna_engine.make_storage(None)
        ).trials
    ]
    assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]


def test_ctrl_c_fails_the_running_trial_and_leaves_the_study_resumable(workdir, monkeypatch):
    spec = config.load(sweep_file(workdir, "interrupt", budget={"trials": 1, "max_epochs": 1}))
    real_train = runner.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec)
    parent = parent_of("interrupt")
    assert parent.info.status == "KILLED"
    assert children_of(parent.info.run_id)[0].info.status == "FAILED"

    monkeypatch.setattr(runner, "train", real_train)
    run_sweep(spec)
    children = children_of(parent.info.run_id)
    assert [c.data.tags["state"] for c in children] == ["failed", "complete"]
    assert parent_of("interrupt").info.status == "FINISHED"


def test_ctrl_c_loses_no_artifact_of_the_trials_before(workdir, monkeypatch):
    from sweeper import tracking

    spec = config.load(sweep_file(workdir, "flush", budget={"trials": 3, "max_epochs": 1}))
    real_train, calls = runner.train, []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first trial's artifacts are being written now
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(runner, "train", interrupted_second)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec)
    first, second = children_of(parent_of("flush").info.run_id)
    assert first.data.tags["state"] == "complete" and second.data.tags["state"] == "failed"
    written = {a.path for a in MlflowClient().list_artifacts(first.info.run_id)}
    assert {"curves.png", "confusion_matrix.png", "model_summary.txt"} <= written
    assert tracking.load_model(first.info.run_id) is not None


@pytest.mark.parametrize("engine", ["optuna", "keras-tuner"])
def test_trials_failing_in_a_row_end_the_sweep_with_one_line_and_a_non_zero_exit(
    workdir, monkeypatch, engine
):
    study = f"failing-{engine}"
    path = sweep_file(
        workdir, study, engine=engine, sampler="random", budget={"trials": 5, "max_epochs": 1}
    )

    def broken(*args, **kwargs):
        raise RuntimeError("out of device memory")

    monkeypatch.setattr(runner, "train", broken)
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"error: sweep {study} stopped: 3 trials failed in a row; the last: ")
    assert last.endswith(" #2: RuntimeError: out of device memory")
    if engine == "optuna":  # Keras Tuner prints each failed trial's traceback itself
        assert "Traceback" not in result.output
    parent = parent_of(study)
    assert parent.info.status == "FAILED"
    children = children_of(parent.info.run_id)
    assert [c.data.tags["state"] for c in children] == ["failed"] * 3
    traceback = mlflow.artifacts.load_text(f"runs:/{children[0].info.run_id}/traceback.txt")
    assert "Traceback" in traceback and "RuntimeError: out of device memory" in traceback


def test_cli_reports_a_bad_sweep_file_in_one_line_and_writes_nothing(workdir):
    path = sweep_file(workdir, "bad", engine="hyperopt")
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 2
    assert "engine: expected engine (optuna, keras-tuner)" in result.output
    assert not (workdir / "mlruns").exists()


def test_refit_retrains_the_best_trial_on_all_training_data_and_is_exported(workdir):
    from sweeper import tracking

    path = sweep_file(
        workdir,
        "refit",
        budget={"trials": 2, "max_epochs": 1},
        data={"limit": 120},
        refit={"epochs": 2},
    )
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    assert "refit: cnn #" in result.output or "refit: mlp #" in result.output
    parent = parent_of("refit")
    children = children_of(parent.info.run_id)
    trials = [c for c in children if c.data.tags["kind"] == "trial"]
    [refit] = [c for c in children if c.data.tags["kind"] == "refit"]
    best = min(trials, key=lambda r: (-r.data.metrics["best_val_accuracy"], r.info.start_time))
    recipe = next(t for t in trials if t.data.tags["baseline"] == "yes")
    # the best trial, unless the recipe is within two standard errors (40 images) of it
    gain = best.data.metrics["best_val_accuracy"] - recipe.data.metrics["best_val_accuracy"]
    noise = metrics.standard_error(recipe.data.metrics["best_val_accuracy"], 40)
    chosen = best if gain > 2 * noise else recipe
    assert refit.data.tags["refit_of"] == chosen.info.run_id
    why = refit.data.tags["refit_choice"]
    if best is recipe:
        assert why == "the best trial"
    elif chosen is recipe:
        assert why.startswith("no trial beat the recipe beyond noise")
    else:
        assert why.startswith("it beat the recipe by")
    # its score is its saved model's: early stopping watched the objective, and the logged
    # validation accuracy is the one of the epoch the model is from
    assert best.data.params["early_stopping_monitor"] == "val_accuracy"
    epoch = int(best.data.metrics["model_epoch"])
    curve = MlflowClient().get_metric_history(best.info.run_id, "val_accuracy")
    assert best.data.metrics["best_val_accuracy"] == next(m.value for m in curve if m.step == epoch)
    assert refit.data.params["val_size"] == "0"
    assert refit.data.params["train_size"] == "200"  # all of the tiny mnist, not the limit
    assert refit.data.metrics["epochs"] == 2
    assert parent.data.metrics["refit_test_accuracy"] == refit.data.metrics["test_accuracy"]
    # the answer where the UI shows it first: the parent's description and name
    note = parent.data.tags["mlflow.note.content"]
    assert f"`{refit.info.run_name} ({refit.info.run_id})`" in note
    assert f"**Winner**: `{best.info.run_name} ({best.info.run_id})`, val_accuracy" in note
    assert "(one standard error, 40 validation images)" in note
    assert "**Recipe trial**: `cnn #0`" in note and "**Documented baseline**: 98.50%" in note
    accuracy = refit.data.metrics["test_accuracy"]
    assert parent.info.run_name == f"sweep refit: {accuracy:.2%} ({refit.info.run_name})"
    best_out = CliRunner().invoke(main, ["best", "--sweep", "refit", "--export", "r.keras"])
    assert best_out.exit_code == 0, best_out.output
    assert f"refit     {refit.info.run_id}" in best_out.output
    from sweeper import results

    assert results.read_metadata(workdir / "r.keras")["run_id"] == refit.info.run_id
    again = CliRunner().invoke(main, ["sweep", str(path)])  # nothing new: no second refit
    assert "is refitted already" in again.output
    assert len(tracking.children(parent.info.run_id)) == len(children)


def test_only_the_best_trials_and_the_recipe_keep_their_models(workdir):
    path = sweep_file(workdir, "keep", budget={"trials": 4, "max_epochs": 1}, keep_models=1)
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    children = children_of(parent_of("keep").info.run_id)
    complete = [c for c in children if c.data.tags["state"] == "complete"]
    best = max(complete, key=lambda c: c.data.metrics["best_val_accuracy"])
    kept = {c.info.run_id for c in complete if "model_dropped" not in c.data.tags}
    recipe = next(c for c in children if c.data.tags["baseline"] == "yes")
    assert kept == {best.info.run_id, recipe.info.run_id}
    assert "dropped" in result.output
    client = MlflowClient()
    for child in complete:
        (output,) = child.outputs.model_outputs
        location = client.get_experiment(child.info.experiment_id).artifact_location
        files = Path(location.removeprefix("file://")) / "models" / output.model_id
        if child.info.run_id in kept:
            assert client.get_logged_model(output.model_id).model_id == output.model_id
            assert any(files.rglob("*.keras"))
        else:  # deleted in MLflow and on disk; the run keeps its plots
            with pytest.raises(mlflow.exceptions.MlflowException):
                client.get_logged_model(output.model_id)
            assert not any(files.rglob("*.keras"))
            assert "keep_models: 1" in child.data.tags["model_dropped"]
            assert "curves.png" in {a.path for a in client.list_artifacts(child.info.run_id)}
    out = CliRunner().invoke(main, ["best", "--sweep", "keep", "--export", "best.keras"])
    assert out.exit_code == 0, out.output


def test_export_of_a_dropped_model_says_how_to_get_it_back(workdir):
    from sweeper import results, tracking

    path = sweep_file(workdir, "dropped", budget={"trials": 2, "max_epochs": 1}, keep_models=0)
    assert CliRunner().invoke(main, ["sweep", str(path)]).exit_code == 0
    trial = next(
        c
        for c in children_of(parent_of("dropped").info.run_id)
        if c.data.tags["baseline"] == "no" and c.data.tags["state"] == "complete"
    )
    with pytest.raises(SweeperError, match=f"sweeper rerun {trial.info.run_id}"):
        results.export(tracking.get_run(trial.info.run_id), workdir / "x.keras")
    assert not (workdir / "x.keras").exists()


@pytest.mark.parametrize("save_optimizer", [False, True])
def test_logged_models_carry_the_optimizer_state_only_when_asked(workdir, save_optimizer):
    from sweeper import tracking

    study = f"optimizer-{save_optimizer}"
    path = sweep_file(
        workdir, study, budget={"trials": 1, "max_epochs": 1}, save_optimizer=save_optimizer
    )
    assert CliRunner().invoke(main, ["sweep", str(path)]).exit_code == 0
    (child,) = children_of(parent_of(study).info.run_id)
    model, _ = tracking.load_model(child.info.run_id)
    assert (getattr(model, "optimizer", None) is not None) == save_optimizer
    probabilities = model.predict(np.zeros((2, 28, 28, 1)), verbose=0)
    assert probabilities.shape == (2, 10)


def test_a_failed_artifact_write_warns_and_the_sweep_goes_on(workdir, monkeypatch):
    from sweeper import plots

    def broken(*args, **kwargs):  # any failure but a full disk, which stops the sweep
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(plots, "curves_figure", broken)
    path = sweep_file(workdir, "no-plots", budget={"trials": 2, "max_epochs": 1})
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    children = children_of(parent_of("no-plots").info.run_id)
    assert [c.data.tags["state"] for c in children] == ["complete", "complete"]
    assert "its artifacts were not all written: [Errno 5] Input/output error" in result.output
    assert (
        len(
            optuna.load_study(
                study_name="no-plots", storage=optuna_engine.make_storage(None)
            ).trials
        )
        == 2
    )


@pytest.mark.parametrize("engine", ["optuna", "keras-tuner"])
def test_a_full_disk_fails_its_trial_and_stops_the_sweep_at_once_in_one_line(
    workdir, monkeypatch, engine
):
    study = f"full-disk-{engine}"
    path = sweep_file(
        workdir, study, engine=engine, sampler="random", budget={"trials": 5, "max_epochs": 1}
    )

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner, "train", full_disk)
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"error: sweep {study} stopped: the disk is full (cnn #0: ")
    assert last.endswith("free some space, then run the same command to resume")
    parent = parent_of(study)
    assert parent.info.status == "FAILED"
    (child,) = children_of(parent.info.run_id)  # no second trial tried
    assert child.data.tags["state"] == "failed" and child.info.status == "FAILED"


def test_a_full_disk_while_the_writer_saves_a_model_stops_the_sweep(workdir, monkeypatch):
    """Where the real writes happen: on the writer thread, beside the next trial."""
    from sweeper.tracking import trial

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trial, "log_model", full_disk)
    path = sweep_file(workdir, "full-writer", budget={"trials": 6, "max_epochs": 1})
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(
        "error: sweep full-writer stopped: the disk is full (writing a trial's artifacts: "
    )
    assert last.endswith("free some space, then run the same command to resume")
    # the trial that trained while the model was written may finish; no later one starts
    assert len(children_of(parent_of("full-writer").info.run_id)) <= 2


FIRST_TRIAL_SEES = """
import sys
from sweeper import cli, runner

train, seen = runner.train, []


def watched(*args, **kwargs):
    seen.append("mlflow" in sys.modules)
    return train(*args, **kwargs)


runner.train = watched
try:
    cli.main(["sweep", sys.argv[1]])
finally:
    print("mlflow loaded when the first trial started training:", seen[0] if seen else "-")
"""


def test_the_first_trial_trains_before_mlflow_is_loaded(workdir):
    # MLflow's import and store are the writer thread's first job, done while that trial
    # trains: a new process, so that this one's MLflow does not count.
    path = sweep_file(workdir, "first-step", budget={"trials": 2, "max_epochs": 1})
    done = subprocess.run(
        [sys.executable, "-c", FIRST_TRIAL_SEES, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mlflow loaded when the first trial started training: False" in done.stdout, (
        done.stdout + done.stderr
    )
    parent = parent_of("first-step")
    assert parent.info.status == "FINISHED"
    runs = children_of(parent.info.run_id)
    assert [r.data.tags["state"] for r in runs] == ["complete", "complete"]
    assert all(r.outputs.model_outputs for r in runs)
    steps = [m.step for m in MlflowClient().get_metric_history(runs[0].info.run_id, "loss")]
    assert steps == [1]


def test_a_store_that_cannot_be_opened_stops_the_sweep_in_one_line(workdir, tracking_uri):
    (workdir / "a-file").write_text("")
    path = sweep_file(workdir, "no-store", budget={"trials": 3, "max_epochs": 1})
    try:
        result = CliRunner().invoke(
            main, ["sweep", str(path), "--tracking-uri", f"sqlite:///{workdir}/a-file/m.db"]
        )
    finally:
        mlflow.set_tracking_uri(tracking_uri)  # the session's store, for the tests after
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(
        "error: sweep no-store stopped: could not open the sweep's run in MLflow (sqlite:///"
    ), last
    study = optuna.load_study(study_name="no-store", storage=optuna_engine.make_storage(None))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]  # no other tried


def refit_clock(monkeypatch, *, seconds_left: float, tick: float = 0.0) -> None:
    """A fake clock for a 1-minute sweep: the search takes no time (`tick` seconds a look),
    then `seconds_left` of the budget are left when the refit loads its data. No refit
    margin."""
    from sweeper import policy, sweep

    clock = [1_000_000.0]

    def now():
        clock[0] += tick
        return clock[0]

    real_load = sweep._load

    def load(spec, data_dir, limit, name=None):
        if limit is None:  # the refit's data: the search is over
            clock[0] = 1_000_000.0 + 60 - seconds_left
        return real_load(spec, data_dir, limit, name)

    monkeypatch.setattr(policy, "now", now)
    monkeypatch.setattr(policy, "REFIT_MARGIN_SECONDS", 0.0)
    monkeypatch.setattr(sweep, "_load", load)


def test_minutes_budget_refits_for_the_epochs_that_fit_what_is_left(workdir, monkeypatch):
    """With a fake clock: the search takes no time, then 8 s are left when the refit plans;
    its epochs come from the winner's measured seconds per epoch and fit those seconds."""
    from sweeper import policy

    refit_clock(monkeypatch, seconds_left=8)
    plans = []
    real_plan = policy.refit_plan

    def plan(*args, **kwargs):
        plans.append((args, kwargs, real_plan(*args, **kwargs)))
        return plans[-1][2]

    monkeypatch.setattr(policy, "refit_plan", plan)
    path = sweep_file(
        workdir,
        "minutes",
        budget={"trials": 2, "max_epochs": 2, "minutes": 1},
        data={"limit": 120},
        families={"mlp": {"units": {"choice": [8, 16]}}},
    )
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 min in all: search 0.3 min, then refit the winner" in result.output
    assert "plan: after the search, a refit of ~" in result.output
    assert len(plans) == 2  # the plan line after the first trial, then the refit's
    args, kwargs, made = plans[-1]
    assert args[0] == 8  # seconds left
    parent = parent_of("minutes")
    children = children_of(parent.info.run_id)
    [refit] = [c for c in children if c.data.tags["kind"] == "refit"]
    winner = next(c for c in children if c.info.run_id == refit.data.tags["refit_of"])
    measured = [
        m.value for m in MlflowClient().get_metric_history(winner.info.run_id, "epoch_seconds")
    ]
    assert args[1] == measured and kwargs["trial_images"] == 120 and kwargs["refit_images"] == 200
    assert made.epochs >= 1 and made.seconds <= 8
    # planned so; it re-plans at its own speed (the clock stands still here)
    assert refit.data.params["max_epochs"] == str(made.epochs)
    assert 1 <= refit.data.metrics["epochs"] <= math.ceil(made.epochs * policy.REFIT_MOST_EPOCHS)
    assert f"so {made.epochs} epochs on {made.images} of 200" in result.output


def test_a_refit_slower_than_planned_replans_from_its_own_epochs(workdir, monkeypatch):
    """The refit asks after each epoch how many fit what is left at its own speed; told 2,
    it ends after 2 with its schedule re-timed, tagged stopped by the timeout."""
    from sweeper import policy

    refit_clock(monkeypatch, seconds_left=8)
    asked = []

    def in_time(seconds_left, epoch_seconds, closing_seconds):
        asked.append((seconds_left, list(epoch_seconds), closing_seconds))
        return 2

    monkeypatch.setattr(policy, "refit_epochs_in_time", in_time)
    path = sweep_file(
        workdir,
        "replans",
        budget={"trials": 1, "max_epochs": 2, "minutes": 1},
        data={"limit": 120},
        families={"mlp": {"units": 8, "lr_schedule": "cosine"}},
    )
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    [refit] = [
        c for c in children_of(parent_of("replans").info.run_id) if c.data.tags["kind"] == "refit"
    ]
    assert refit.data.metrics["epochs"] == 2 and refit.data.tags["stopped_by"] == "timeout"
    planned = int(refit.data.params["max_epochs"])
    assert planned > 2 and f"2 epochs where {planned} were planned" in result.output
    assert [len(seconds) for _, seconds, _ in asked] == [1, 2]
    assert asked[0][0] == 8 and asked[0][2] > 0  # the clock stood; the test predictions


def floor_sweep(workdir, monkeypatch, study, *, max_epochs):
    """A 1-minute sweep of a budget of 3 trials whose refit.min_epochs no budget holds, on
    `refit_clock` (it moves: the search can end); its CLI result."""
    refit_clock(monkeypatch, seconds_left=8, tick=0.01)
    path = sweep_file(
        workdir,
        study,
        budget={"trials": 3, "max_epochs": max_epochs, "minutes": 1, "search_share": 0.5},
        refit={"min_epochs": 100_000},
        data={"limit": 120},
        families={"mlp": {"units": {"choice": [8, 16]}, "early_stopping_patience": 0}},
    )
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    return result


def test_a_share_that_leaves_the_refit_too_few_epochs_ends_the_search_early(workdir, monkeypatch):
    """refit.min_epochs more than the whole budget holds: the search ends after its first
    trial (of a budget of 3; one epoch: nothing of it left to cut), and the refit gets what
    is left."""
    result = floor_sweep(workdir, monkeypatch, "floor", max_epochs=1)
    assert "at least 100000 (the search ends early where it must)" in result.output
    assert "the search ends 0.5 min early: its share would leave the refit" in result.output
    assert "fewer than refit.min_epochs (100000)" in result.output
    children = children_of(parent_of("floor").info.run_id)
    assert sorted(c.data.tags["kind"] for c in children) == ["refit", "trial"]


def test_a_first_trial_that_would_leave_the_refit_too_few_epochs_stops_after_one(
    workdir, monkeypatch
):
    """The first trial's own epochs would eat the floor's time: it stops after its first
    (complete, as the recipe's one trial), and the refit trains that recipe."""
    result = floor_sweep(workdir, monkeypatch, "first", max_epochs=3)
    assert "the search ends after mlp #0's epoch 1: its 2 more" in result.output
    assert "the search ends 0." not in result.output  # not shortened twice
    children = children_of(parent_of("first").info.run_id)
    [trial] = [c for c in children if c.data.tags["kind"] == "trial"]
    [refit] = [c for c in children if c.data.tags["kind"] == "refit"]
    assert trial.data.tags["state"] == "complete" and trial.data.metrics["epochs"] == 1
    assert refit.data.tags["refit_of"] == trial.info.run_id


def probed_sweep(workdir, monkeypatch, study, *, budget, refit, args=()):
    """A 1-minute sweep of the tiny file (its cnn recipe first) on `refit_clock`, whose
    trials' 120 images are more than TIMING_IMAGES (60 here), so the probe runs; its CLI
    result and the speeds the probe measured."""
    from sweeper import policy, train

    refit_clock(monkeypatch, seconds_left=8, tick=0.01)
    monkeypatch.setattr(policy, "TIMING_IMAGES", 60)
    probed = []
    real_probe = train.seconds_per_image

    def probe(*args, **kwargs):
        probed.append(real_probe(*args, **kwargs))
        return probed[-1]

    monkeypatch.setattr(train, "seconds_per_image", probe)
    path = sweep_file(workdir, study, budget=budget, refit=refit, data={"limit": 120})
    result = CliRunner().invoke(main, ["sweep", str(path), *args])
    assert result.exit_code == 0, result.output
    return result, probed


def test_where_no_trial_fits_beside_the_refits_floor_only_the_recipe_is_timed(workdir, monkeypatch):
    """A probe before the first trial shows that a trial and the floor's refit do not both fit:
    no search; the recipe's one trial trains TIMING_EPOCHS on TIMING_IMAGES (a sample), and
    the refit trains that recipe on all the images."""
    result, probed = probed_sweep(
        workdir,
        monkeypatch,
        "timed",
        budget={"trials": 3, "max_epochs": 3, "minutes": 1, "search_share": 0.5},
        refit={"min_epochs": 100_000},
    )
    assert len(probed) == 1
    assert "no search: a cnn trial (3 epochs on 120 images" in result.output
    assert "the cnn recipe trains 2 epochs on 60 images to time the refit" in result.output
    assert "the refit's 100000 epochs (refit.min_epochs" in result.output
    parent = parent_of("timed")
    assert "do not both fit in 1 minutes" in parent.data.tags["no_search"]
    assert "**No search**: a cnn trial" in parent.data.tags["mlflow.note.content"]
    children = children_of(parent.info.run_id)
    [trial] = [c for c in children if c.data.tags["kind"] == "trial"]
    [refit] = [c for c in children if c.data.tags["kind"] == "refit"]
    assert trial.data.tags["baseline"] == "yes" and trial.data.tags["state"] == "complete"
    assert trial.data.params["train_size"] == "60" and trial.data.metrics["epochs"] == 2
    assert refit.data.tags["refit_of"] == trial.info.run_id
    assert "on 60 images, so" in result.output  # the refit plans from the timed sample


def test_a_search_share_of_0_trains_the_recipe_alone_without_probing(workdir, monkeypatch):
    """`budget.search_share: 0` (a default file where the search did not pay): no probe,
    no search; the recipe's timing trial, then its refit for the rest of the minutes, even
    with the search's trials and workers asked for."""
    result, probed = probed_sweep(
        workdir,
        monkeypatch,
        "alone",
        budget={"trials": 3, "max_epochs": 3, "minutes": 1, "search_share": 0},
        refit={"min_epochs": 1},
        args=["--workers", "2"],
    )
    assert probed == []
    assert "no search (budget.search_share 0): one process, not 2 workers" in result.output
    assert "no search (budget.search_share 0): the first recipe trains 2 epochs" in result.output
    assert "no search: budget.search_share is 0; the cnn recipe trains 2 epochs on 60" in (
        result.output
    )
    assert "(timing the refit, no search)" in result.output and "finished)" not in result.output
    parent = parent_of("alone")
    assert parent.data.tags["no_search"] == "budget.search_share is 0"
    children = children_of(parent.info.run_id)
    [trial] = [c for c in children if c.data.tags["kind"] == "trial"]
    [refit] = [c for c in children if c.data.tags["kind"] == "refit"]
    assert trial.data.tags["baseline"] == "yes" and trial.data.params["train_size"] == "60"
    assert refit.data.tags["refit_of"] == trial.info.run_id
    again = CliRunner().invoke(main, ["sweep", str(workdir / "alone.yaml")])
    assert again.exit_code == 0, again.output
    resumed = children_of(parent_of("alone").info.run_id)  # one parent still
    # its one trial ran: no search starts
    assert [c.info.run_id for c in resumed if c.data.tags["kind"] == "trial"] == [trial.info.run_id]


def test_the_command_line_turns_a_files_search_on_and_off(workdir, monkeypatch):
    """--search-share 0.5 searches a file that says 0; 0 needs minutes to fill."""
    result, _ = probed_sweep(
        workdir,
        monkeypatch,
        "on",
        budget={"trials": 2, "max_epochs": 1, "minutes": 1, "search_share": 0},
        refit={"min_epochs": 1},
        args=["--search-share", "0.5"],
    )
    assert "no search" not in result.output
    trials = [c for c in children_of(parent_of("on").info.run_id) if c.data.tags["kind"] == "trial"]
    assert len(trials) == 2
    path = sweep_file(workdir, "off", budget={"trials": 2, "max_epochs": 1})
    refused = CliRunner().invoke(main, ["sweep", str(path), "--search-share", "0"])
    assert refused.exit_code != 0
    assert "--search-share 0 (no search): expected --minutes beside it" in refused.output


def test_where_a_trial_fits_beside_the_refits_floor_the_probe_lets_the_search_run(
    workdir, monkeypatch
):
    result, probed = probed_sweep(
        workdir,
        monkeypatch,
        "room",
        budget={"trials": 2, "max_epochs": 1, "minutes": 1, "search_share": 0.5},
        refit={"min_epochs": 1},
    )
    assert len(probed) == 1 and "no search" not in result.output
    children = children_of(parent_of("room").info.run_id)
    trials = [c for c in children if c.data.tags["kind"] == "trial"]
    assert len(trials) == 2 and {t.data.params["train_size"] for t in trials} == {"120"}


def test_limit_on_the_command_line_limits_the_refit_too(workdir):
    path = sweep_file(workdir, "smoke", budget={"trials": 1, "max_epochs": 1}, refit={"epochs": 1})
    result = CliRunner().invoke(main, ["sweep", str(path), "--limit", "60"])
    assert result.exit_code == 0, result.output
    assert (
        "then refit the winner on 60 images and the validation split (--limit) for 1 epochs"
        in result.output
    )
    children = children_of(parent_of("smoke").info.run_id)
    [refit] = [c for c in children if c.data.tags["kind"] == "refit"]
    assert refit.data.params["train_size"] == "100"  # 60 training + 40 validation images


def test_a_worker_whose_refit_another_claimed_skips_it_and_leaves_the_parent_open(
    workdir, monkeypatch
):
    monkeypatch.setattr(optuna_engine.Engine, "claim_refit", lambda self, number: False)
    path = sweep_file(workdir, "rivals", budget={"trials": 1, "max_epochs": 1}, refit={"epochs": 1})
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    assert "another worker of study rivals claimed the refit of" in result.output
    parent = parent_of("rivals")
    assert [c.data.tags["kind"] for c in children_of(parent.info.run_id)] == ["trial"]
    assert parent.info.status == "RUNNING"  # the claimant ends it after its refit


def test_a_two_objective_sweep_tags_its_front_and_best_honours_limits(workdir):
    path = sweep_file(
        workdir,
        "front",
        objectives=[{"metric": "val_accuracy"}, {"metric": "params", "direction": "minimize"}],
        constraints={"params": 15000},
        budget={"trials": 5, "max_epochs": 1},
        families={"mlp": {"units": {"choice": [8, 16, 24, 32]}, "hidden_layers": 1}},
    )
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    parent = parent_of("front")
    trials = [c for c in children_of(parent.info.run_id) if c.data.tags["kind"] == "trial"]
    done = [t for t in trials if t.data.tags["state"] == "complete"]
    # 784 x units + units + units x 10 + 10 trainable parameters; 15,000 keeps units <= 16
    for t in done:
        units = int(t.data.params["units"])
        assert t.data.metrics["params"] == 795 * units + 10
        assert t.data.tags["feasible"] == ("yes" if units <= 16 else "no")

    def point(t):
        return (t.data.metrics["best_val_accuracy"], -t.data.metrics["params"])

    feasible = [t for t in done if t.data.tags["feasible"] == "yes"]
    front = {
        t.info.run_id
        for t in feasible
        if not any(
            all(a >= b for a, b in zip(point(o), point(t))) and point(o) != point(t)
            for o in feasible
        )
    }
    assert {t.info.run_id for t in done if t.data.tags["pareto"] == "yes"} == front
    artifacts = {a.path for a in MlflowClient().list_artifacts(parent.info.run_id)}
    assert {"pareto_front.png", "pareto_front.md"} <= artifacts
    listed = CliRunner().invoke(main, ["best", "--sweep", "front", "--pareto"])
    assert listed.exit_code == 0, listed.output
    assert all(run_id[:8] in listed.output for run_id in front)
    small = CliRunner().invoke(main, ["best", "--sweep", "front", "--max-params", "12000"])
    assert small.exit_code == 0, small.output
    within = [t for t in done if t.data.metrics["params"] <= 12000]
    expected = min(within, key=lambda t: (-t.data.metrics["best_val_accuracy"], t.info.start_time))
    assert f"best run  {expected.info.run_id}" in small.output
    assert "trainable parameters" in small.output
    point = next(t for t in done if t.info.run_id in front)
    no_epochs = CliRunner().invoke(main, ["refit", point.info.run_id])
    assert no_epochs.exit_code == 2 and "give the refit's epochs (--epochs N)" in no_epochs.output
    refitted = CliRunner().invoke(main, ["refit", point.info.run_id, "--epochs", "1"])
    assert refitted.exit_code == 0, refitted.output
    [refit] = [c for c in children_of(parent.info.run_id) if c.data.tags["kind"] == "refit"]
    assert refit.data.tags["refit_of"] == point.info.run_id
    assert refit.data.tags["refit_choice"] == f"asked for ({point.info.run_name})"
    assert refit.data.params["train_size"] == "200" and "latency_ms" in refit.data.metrics


@pytest.mark.parametrize(
    "sampler,pruner",
    [
        ("cmaes", "none"),
        ("grid", "none"),
        ("nsga2", "none"),
        ("random", "hyperband"),
        ("random", "successive-halving"),
        ("gp", "none"),
    ],
)
def test_every_optuna_sampler_and_pruner_runs_a_tiny_sweep(workdir, sampler, pruner):
    if sampler == "gp":
        pytest.importorskip("torch", reason="Optuna's GPSampler needs PyTorch")
    study = f"each-{sampler}-{pruner}"
    families = {"mlp": {"units": {"choice": [8, 16]}, "dropout": {"choice": [0.0, 0.2]}}}
    path = sweep_file(
        workdir,
        study,
        sampler=sampler,
        pruner=pruner,
        # pruners need epochs to compare; samplers need only trials
        budget={"trials": 2, "max_epochs": 2 if pruner != "none" else 1},
        families=families,
        baseline_first=False,
    )
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    engine = optuna_engine.Engine(config.load(path))
    assert type(engine.study.sampler).__name__.lower().startswith(sampler.replace("-", "")[:4])
    assert len([t for t in engine.trials() if t.state in ("complete", "pruned")]) == 2
    pruners = {"none": "Nop", "hyperband": "Hyperband", "successive-halving": "SuccessiveHalving"}
    assert type(engine.study.pruner).__name__ == f"{pruners[pruner]}Pruner"
