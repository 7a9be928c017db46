"""Many workers on one study: a real PostgreSQL and a real `mlflow server` on loopback.

Uses scripts/cluster.sh (the same script as `make cluster`); skipped where PostgreSQL is
not installed (.ci/run installs it).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from test_sweep import TINY_SWEEP

ROOT = Path(__file__).resolve().parents[1]
HAS_POSTGRES = bool(
    shutil.which("pg_ctl") or list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
)
pytestmark = pytest.mark.skipif(not HAS_POSTGRES, reason="PostgreSQL is not installed")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    env = {
        **os.environ,
        "CLUSTER_DIR": str(folder),
        "PG_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "PYTHON": sys.executable,
    }
    script = str(ROOT / "scripts" / "cluster.sh")
    started = subprocess.run([script, "start"], env=env, capture_output=True, text=True)
    assert started.returncode == 0, started.stderr + started.stdout
    urls = dict(
        line.removeprefix("export ").split("=", 1)
        for line in started.stdout.splitlines()
        if line.startswith("export ")
    )
    yield urls["SWEEPER_STORAGE"], urls["MLFLOW_TRACKING_URI"]
    subprocess.run([script, "stop"], env=env, capture_output=True)


def start_workers(n, path, storage, tracking, workdir, data_dir, beat="30", elsewhere=()):
    """`elsewhere`: the workers (by index) that run under another host name, as on another
    machine: their trials only heartbeats can tell dead."""
    env = {**os.environ, "SWEEPER_DATA_DIR": str(data_dir), "SWEEPER_HEARTBEAT_SECONDS": beat}
    command = [
        sys.executable,
        "-m",
        "sweeper.cli",
        "sweep",
        str(path),
        "--storage",
        storage,
        "--tracking-uri",
        tracking,
        "--threads",
        "1",
    ]
    mlflow.set_tracking_uri(tracking)
    workers = []
    for i in range(n):
        log = open(workdir / f"worker{i}.log", "w")  # noqa: SIM115 (closed at exit)
        host = ["unshare", "--uts", "sh", "-c", 'hostname elsewhere && exec "$@"', "sh"]
        worker = subprocess.Popen(
            [*(host if i in elsewhere else []), *command],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        worker.log_path = log.name
        workers.append(worker)
    return workers


def wait_all(workers):
    """Waits for every worker; a failure shows the end of that worker's log."""
    for worker in workers:
        assert worker.wait(timeout=600) == 0, Path(worker.log_path).read_text()[-3000:]


def write_sweep(folder, study, trials, **changes):
    path = folder / f"{study}.yaml"
    path.write_text(
        yaml.safe_dump(
            {**TINY_SWEEP, "study": study, "budget": {"trials": trials, "max_epochs": 1}, **changes}
        )
    )
    return path


def sweep_runs(tracking, study):
    mlflow.set_tracking_uri(tracking)
    experiment = mlflow.get_experiment_by_name("mnist").experiment_id
    runs = MlflowClient().search_runs([experiment], f"tags.study = '{study}'", max_results=500)
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert len(parents) == 1, [p.info.run_id for p in parents]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


def test_three_workers_share_one_budget(cluster, tmp_path, data_dir):
    storage, tracking = cluster
    path = write_sweep(tmp_path, "three", 9)
    workers = start_workers(3, path, storage, tracking, tmp_path, data_dir)
    wait_all(workers)

    study = optuna.load_study(study_name="three", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 9
    assert len({t.number for t in complete}) == 9
    assert len({t.user_attrs["worker"] for t in complete}) >= 2  # the work was shared
    parent, children = sweep_runs(tracking, "three")
    finished = [c for c in children if c.data.tags["state"] == "complete"]
    assert len(finished) == 9
    assert sorted(int(c.data.tags["trial_number"]) for c in finished) == sorted(
        t.number for t in complete
    )  # each trial ran once, in one run
    best = max(complete, key=lambda t: (t.value, -t.number))  # from all workers' trials
    assert parent.data.tags["best_run"].split(" (")[0].endswith(f" #{best.number}")
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best.value)


def test_a_killed_worker_trial_is_failed_by_heartbeat_and_retried(cluster, tmp_path, data_dir):
    if subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare --uts` (root) to run a worker under another host name")
    storage, tracking = cluster
    slow = {**TINY_SWEEP["families"]["cnn"], "early_stopping_patience": 0}
    path = write_sweep(
        tmp_path, "killed", 6, families={"cnn": slow}, budget={"trials": 6, "max_epochs": 30}
    )  # trials long enough that the kill lands inside one, not between two
    # the victim runs "on another machine": the others cannot see its process, only its
    # trial's heartbeats stopping
    workers = start_workers(
        3, path, storage, tracking, tmp_path, data_dir, beat="2", elsewhere=(0,)
    )
    victim = workers[0]
    killed = None
    for _ in range(600):
        try:
            study = optuna.load_study(study_name="killed", storage=storage)
        except KeyError:
            time.sleep(0.5)
            continue
        mine = [
            t
            for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
            if t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
            and "mlflow_run_id" in t.user_attrs
        ]
        if mine:
            killed = mine[0]
            time.sleep(1.0)  # inside its training loop
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    assert killed is not None, "the victim never started a trial"
    victim.wait(timeout=60)
    wait_all(workers[1:])

    study = optuna.load_study(study_name="killed", storage=storage)
    by_number = {t.number: t for t in study.trials}
    assert by_number[killed.number].state == optuna.trial.TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert [t.state for t in retries] == [optuna.trial.TrialState.COMPLETE]
    assert retries[0].params == killed.params
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 6
    lost = MlflowClient().get_run(killed.user_attrs["mlflow_run_id"])
    assert lost.info.status == "FAILED" and "its worker died" in lost.data.tags["error"]
    assert "heartbeat lost" in lost.data.tags["error"]  # not this machine's process check
    assert killed.user_attrs["worker"].startswith("elsewhere:")
    _, children = sweep_runs(tracking, "killed")
    assert len([c for c in children if c.data.tags["state"] == "complete"]) == 6


def test_the_cluster_database_asks_for_its_generated_password(cluster):
    import psycopg

    storage, _ = cluster
    url = urlparse(storage)
    assert url.password and len(url.password) == 32
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1", port=url.port, user="postgres", dbname="optuna", password="guess"
        )
    psycopg.connect(storage).close()
