"""Several workers on the embedded default (a journal file and MLflow's SQLite store, no
server), started and watched by `sweeper sweep --workers`: the plan, a stress test, a worker
killed with -9, Ctrl-C (SIGTERM) and the store of earlier versions."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from conftest import TINY_SWEEP
from sweeper import devices

MLP_ONLY = {"mlp": {"units": {"int": [8, 64], "step": 8}, "early_stopping_patience": 0}}


def test_auto_is_one_single_threaded_worker_per_core_within_trials_and_memory():
    cpu = dict(data_bytes=10**6, gpu_ids=[], memory=64 * 2**30)
    shape = lambda plan: (plan.workers, plan.threads, plan.gpus)  # noqa: E731
    assert shape(devices.plan(None, trials=20, n_cores=8, **cpu)) == (8, 1, ())
    assert shape(devices.plan(None, trials=3, n_cores=8, **cpu)) == (3, 2, ())  # one per trial
    small = {**cpu, "memory": 5 * 2**30}
    assert devices.plan(None, trials=20, n_cores=8, **small).workers == 2  # 2 GiB each
    assert shape(devices.plan(4, trials=20, n_cores=8, **cpu)) == (4, 2, ())  # as asked
    big = devices.plan(None, trials=20, n_cores=8, all_cores_per_trial=True, **cpu)
    assert shape(big) == (1, 8, ())  # a ResNet sweep: one worker, every thread


def test_resnet_and_transfer_trials_use_every_core_the_small_families_do_not():
    from sweeper import families

    assert families.uses_all_cores(["cnn", "resnet"]) and families.uses_all_cores(["transfer"])
    assert not families.uses_all_cores(["mlp", "cnn", "cnn_bn"])


def test_auto_with_gpus_is_one_worker_per_gpu_each_seeing_only_its_own():
    plan = devices.plan(None, trials=10, data_bytes=0, gpu_ids=["0", "1"], n_cores=16, memory=2**36)
    assert (plan.workers, plan.threads) == (2, 8)
    assert [plan.environment(i) for i in range(2)] == [
        {"CUDA_VISIBLE_DEVICES": "0"},
        {"CUDA_VISIBLE_DEVICES": "1"},
    ]


def start(folder, data_dir, *args, study="w", trials=8, epochs=1, families=None):
    (folder / f"{study}.yaml").write_text(
        yaml.safe_dump(
            {
                **TINY_SWEEP,
                "study": study,
                "budget": {"trials": trials, "max_epochs": epochs},
                "families": families or MLP_ONLY,
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen(
        [sys.executable, "-m", "sweeper.cli", "sweep", f"{study}.yaml", *args],
        cwd=folder,
        env={**env, "SWEEPER_DATA_DIR": str(data_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process, timeout=600):
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def study_of(folder, name="w"):
    storage = JournalStorage(JournalFileBackend(str(folder / "mlruns" / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def runs_of(folder, study="w"):
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    client = MlflowClient()
    runs = client.search_runs(
        [mlflow.get_experiment_by_name("mnist").experiment_id],
        f"tags.study = '{study}'",
        max_results=1000,
    )
    parents = [r for r in runs if r.data.tags["kind"] == "sweep"]
    assert len(parents) == 1
    return client, parents[0], [r for r in runs if r.data.tags["kind"] == "trial"]


def test_four_workers_on_the_embedded_store_lose_no_run_and_no_metric(tmp_path, data_dir):
    code, out = finish(start(tmp_path, data_dir, "--workers", "4", trials=8, epochs=2))
    assert code == 0, out
    assert "database is locked" not in out and "Traceback" not in out, out
    assert "cuInit" not in out and "oneDNN" not in out  # native start-up lines stay hidden
    assert out.count("4 workers x 1 thread(s)") == 1

    study = study_of(tmp_path)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 8 and len(study.trials) == 8
    assert len({t.user_attrs["worker"] for t in complete}) >= 2  # the work was shared
    client, parent, trials = runs_of(tmp_path)
    assert sorted(int(r.data.tags["trial_number"]) for r in trials) == list(range(8))
    values = {t.number: t.value for t in complete}
    for run in trials:
        assert run.info.status == "FINISHED" and run.data.tags["state"] == "complete"
        # each worker logged the value its trial gave the shared study
        number = int(run.data.tags["trial_number"])
        assert run.data.metrics["best_val_accuracy"] == pytest.approx(values[number])
        for metric in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert steps == [1, 2], (run.info.run_name, metric, steps)
        assert run.outputs.model_outputs, run.info.run_name
    best = max(complete, key=lambda t: (t.value, -t.number))
    assert parent.data.tags["best_run"].startswith(f"mlp #{best.number} (")
    assert parent.info.status == "FINISHED"
    assert [i.dataset.name for i in parent.inputs.dataset_inputs] == ["mnist"]


def test_a_worker_killed_with_minus_9_has_its_trial_failed_and_run_again(tmp_path, data_dir):
    slow = {"mlp": {**MLP_ONLY["mlp"], "units": {"int": [64, 256], "step": 64}}}
    # Trials long enough that the kill lands inside the victim's: its MLflow run, which the
    # test waits for, opens on the writer thread after the trial began training.
    sweep = start(tmp_path, data_dir, "--workers", "2", trials=4, epochs=30, families=slow)
    victim = None
    for _ in range(600):
        time.sleep(0.2)
        if not (tmp_path / "mlruns" / "optuna.journal").exists():
            continue
        try:
            running = study_of(tmp_path).get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            continue
        running = [t for t in running if "mlflow_run_id" in t.user_attrs]
        if running:
            victim = running[0]
            time.sleep(1.0)  # inside its training loop
            os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
            break
    assert victim is not None, "no worker started a trial"
    code, out = finish(sweep)
    assert code == 0, out
    assert "was killed by signal 9" in out and f"trial(s) {victim.number} failed" in out, out

    study = study_of(tmp_path)
    assert study.trials[victim.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert [t.state for t in retries] == [TrialState.COMPLETE]
    assert retries[0].params == victim.params
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4  # the budget went on
    assert not study.get_trials(states=(TrialState.RUNNING,))
    client, parent, trials = runs_of(tmp_path)
    lost = client.get_run(victim.user_attrs["mlflow_run_id"])
    assert lost.info.status == "FAILED" and "its worker died" in lost.data.tags["error"]
    assert [r for r in trials if r.info.status == "RUNNING"] == []


def test_sigterm_stops_every_worker_and_the_sweep_resumes(tmp_path, data_dir):
    slow = {"mlp": {**MLP_ONLY["mlp"], "units": {"int": [64, 256], "step": 64}}}
    # Trials long enough that the signal, 2 s after both runs opened, lands inside them (a
    # run opens on the writer thread once its trial trains: on a slow machine, seconds after
    # Optuna marks the trial running).
    sweep = start(tmp_path, data_dir, "--workers", "2", trials=6, epochs=400, families=slow)
    for _ in range(600):
        time.sleep(0.2)
        journal = tmp_path / "mlruns" / "optuna.journal"
        if not journal.exists():
            continue
        try:
            running = study_of(tmp_path).get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            continue
        if sum("mlflow_run_id" in t.user_attrs for t in running) == 2:
            break
    time.sleep(2.0)
    sweep.send_signal(signal.SIGTERM)  # what a scheduler or `docker stop` sends
    code, out = finish(sweep, timeout=120)
    assert code == 130, out
    study = study_of(tmp_path)
    assert not study.get_trials(states=(TrialState.RUNNING,)), out
    assert len(study.get_trials(states=(TrialState.FAIL,))) == 2
    client, parent, trials = runs_of(tmp_path)
    assert parent.info.status == "KILLED"
    assert [r.info.status for r in trials] == ["FAILED", "FAILED"]

    code, out = finish(start(tmp_path, data_dir, trials=3, epochs=1))
    assert code == 0, out
    numbers = [t.number for t in study_of(tmp_path).get_trials(states=(TrialState.COMPLETE,))]
    assert numbers == [2, 3, 4]  # numbering goes on from the interrupted session


def test_a_study_in_an_earlier_sqlite_store_moves_to_the_journal(tmp_path, data_dir):
    (tmp_path / "mlruns").mkdir()
    earlier = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    old = optuna.create_study(study_name="w", storage=earlier, direction="maximize")
    for units in (8, 16):
        old.enqueue_trial({"family": "mlp", "mlp.units": units})
        old.optimize(lambda t: t.suggest_int("mlp.units", 8, 64, step=8) / 100, n_trials=1)
    code, out = finish(start(tmp_path, data_dir, trials=3, epochs=1))
    assert code == 0, out
    assert "moved 1 Optuna study" in out
    study = study_of(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3  # 2 moved, 1 new
    assert [t.value for t in study.trials[:2]] == [0.08, 0.16]
    assert Path(tmp_path / "mlruns" / "optuna.db").exists()  # kept, no longer read


def test_workers_refuse_sqlite_and_keras_tuner_with_one_line(tmp_path, data_dir):
    code, out = finish(
        start(tmp_path, data_dir, "--workers", "2", "--storage", f"sqlite:///{tmp_path}/o.db")
    )
    assert code == 2 and "SQLite is not safe for several processes" in out, out
    code, out = finish(start(tmp_path, data_dir, "--workers", "2", "--engine", "keras-tuner"))
    assert code == 2 and "Keras Tuner's own distributed mode" in out, out
    assert "Traceback" not in out
    code, out = finish(start(tmp_path, data_dir, "--workers", "0"))
    assert code == 2 and "expected a number of workers (1 or more) or auto" in out, out
