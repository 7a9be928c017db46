"""best --export, predict and rerun, after one small sweep in a store of their own."""

import contextlib
import html
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import keras
import mlflow
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from conftest import TINY_SWEEP, write_image_folder
from sweeper import data, results
from sweeper.cli import main


def test_best_export_gives_back_the_logged_test_accuracy(store, data_dir):
    result = CliRunner().invoke(main, ["best", "--sweep", "tiny", "--export", "m.keras"])
    assert result.exit_code == 0, result.output
    run_id = result.output.split("best run")[1].split()[0]
    logged = mlflow.get_run(run_id).data.metrics["test_accuracy"]
    model = keras.models.load_model(store / "m.keras", safe_mode=True)
    ds = data.load("mnist", data_dir=data_dir)
    accuracy = np.mean(model.predict(ds.x_test, verbose=0).argmax(1) == ds.y_test)
    assert round(float(accuracy), 3) == round(logged, 3)
    assert results.read_metadata(store / "m.keras")["class_names"] == list("0123456789")
    assert "Downloading artifacts" not in result.output  # MLflow's progress bars: -v only
    family = mlflow.get_run(run_id).data.params["family"]
    assert f"baseline  {family}-mnist: documented" in result.output


def test_best_selects_on_validation_accuracy_by_default(store):
    runs = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("mnist").experiment_id],
        "tags.study = 'tiny' and tags.state = 'complete'",
    )
    # the best, and among equals the earliest (the sweep's lowest trial number)
    expected = min(runs, key=lambda r: (-r.data.metrics["best_val_accuracy"], r.info.start_time))
    assert results.best_run(results.Selection(sweep="tiny")).info.run_id == expected.info.run_id


def test_predict_names_the_class_of_each_image(store, tmp_path):
    CliRunner().invoke(main, ["best", "--sweep", "tiny", "--export", "p.keras"])
    write_image_folder(tmp_path / "imgs", ("a",), per_class=2, size=(28, 28))
    images = sorted(str(p) for p in (tmp_path / "imgs" / "a").glob("*.png"))
    result = CliRunner().invoke(main, ["predict", str(store / "p.keras"), *images])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    for line, image in zip(lines, images):
        name, probability = line.removeprefix(f"{image}: ").split(" (")
        assert name in list("0123456789") and 0 < float(probability.rstrip(")")) <= 1


def test_rerun_trains_the_same_trial_again(store):
    original = results.best_run(results.Selection(sweep="tiny"))
    result = CliRunner().invoke(main, ["rerun", original.info.run_id])
    assert result.exit_code == 0, result.output
    new = mlflow.get_run(result.output.strip().split()[-1])
    assert new.data.tags["rerun_of"] == original.info.run_id
    assert new.data.params == {**original.data.params}
    # the same seed, data and params: the same training, to float noise
    assert new.data.metrics["test_accuracy"] == original.data.metrics["test_accuracy"]
    assert math.isclose(
        new.data.metrics["test_loss"], original.data.metrics["test_loss"], rel_tol=1e-3
    )


def test_best_without_runs_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    result = CliRunner().invoke(main, ["best", "--dataset", "cifar10"])
    assert result.exit_code == 2
    assert "No finished run matches (dataset=cifar10)" in result.output


@pytest.fixture(scope="module")
def server(swept):
    """An MLflow server on the tiny sweep's store, on a free port of 127.0.0.1: its base
    URL, one for the module's tests (it takes seconds to start)."""
    with mlflow_server(swept[1]) as base:
        yield base


@contextlib.contextmanager
def mlflow_server(uri):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def call(base, path, body=None):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode() if body else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def sweep_over_rest(base):
    """The tiny sweep's experiment id and its runs' tags, by run id, read over REST."""
    experiment = call(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=mnist")
    experiment_id = experiment["experiment"]["experiment_id"]
    runs = call(
        base,
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment_id], "filter": "tags.study = 'tiny'", "max_results": 100},
    )["runs"]
    return experiment_id, {
        r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs
    }


def test_mlflow_server_serves_the_sweep_over_rest(server):
    _, tags = sweep_over_rest(server)
    parents = [i for i, t in tags.items() if t.get("kind") == "sweep"]
    assert len(parents) == 1
    children = [i for i, t in tags.items() if t.get("mlflow.parentRunId") == parents[0]]
    assert len(children) == 7


CHROMIUM = next(
    (
        found
        for name in ("chromium", "chromium-browser", "google-chrome")
        if (found := shutil.which(name))
    ),
    None,
)


def rendered(url):
    """The page's text after its scripts ran, from headless Chromium."""
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=30000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout
    text = re.sub(r"<(style|script)\b.*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (.ci/run installs Debian's)")
def test_the_ui_in_a_browser_shows_the_sweeps_runs_and_its_summary(server):
    experiment_id, tags = sweep_over_rest(server)
    [parent] = [i for i, t in tags.items() if t.get("kind") == "sweep"]
    every = len(
        call(server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})["runs"]
    )
    # where `sweeper ui` points: the experiment's training runs (MLflow 3 opens an
    # experiment on its GenAI overview otherwise)
    runs = rendered(f"{server}/#/experiments/{experiment_id}/runs")
    page = rendered(f"{server}/#/experiments/{experiment_id}/runs/{parent}")
    # the sweep's result in its name; its 7 trials nested under it
    assert re.search(r"sweep tiny: \d+\.\d\d% \(", runs), runs[:2000]
    found = re.search(r"(\d+) matching runs", runs)
    assert found and int(found.group(1)) == every, runs[:2000]  # all of the experiment's
    # its page: the summary as the description, the trials as its child runs
    assert "Description Result" in page or "Description Winner" in page, page[:3000]
    assert "Recipe trial" in page and "Child runs" in page and "cnn #0" in page, page[:3000]


def test_export_refuses_to_overwrite_a_file_without_force(store):
    first = CliRunner().invoke(main, ["best", "--sweep", "tiny", "--export", "once.keras"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(main, ["best", "--sweep", "tiny", "--export", "once.keras"])
    assert again.exit_code == 2 and "once.keras exists; --force overwrites it" in again.output
    forced = ["best", "--sweep", "tiny", "--export", "once.keras", "--force"]
    assert CliRunner().invoke(main, forced).exit_code == 0


def test_best_measures_the_baseline_by_the_sweeps_own_recipe_trial(store):
    result = CliRunner().invoke(main, ["best", "--sweep", "tiny", "--family", "cnn"])
    assert result.exit_code == 0, result.output
    recipe_trial = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("mnist").experiment_id],
        "tags.study = 'tiny' and tags.baseline = 'yes'",
    )
    recipe_trial = [r for r in recipe_trial if "rerun_of" not in r.data.tags]  # not a rerun
    assert len(recipe_trial) == 1 and recipe_trial[0].info.run_name == "cnn #0"
    accuracy = recipe_trial[0].data.metrics["test_accuracy"]
    assert (
        f"measured {accuracy:.4f} (run {recipe_trial[0].info.run_id}, cnn #0: this sweep's "
        "recipe trial)" in result.output
    )


def test_best_never_compares_across_datasets_silently(tmp_path, monkeypatch, data_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("SWEEPER_DATA_DIR", str(data_dir))
    for dataset in ("mnist", "cifar10"):
        path = tmp_path / f"{dataset}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    **TINY_SWEEP,
                    "dataset": dataset,
                    "study": dataset,
                    "budget": {"trials": 1, "max_epochs": 1},
                    "families": {"mlp": {"units": 8}},
                }
            )
        )
        assert CliRunner().invoke(main, ["sweep", str(path)]).exit_code == 0
    result = CliRunner().invoke(main, ["best"])
    assert result.exit_code == 0, result.output
    assert (
        "dataset   cifar10, the latest sweep's (runs on cifar10, mnist: --dataset picks one)"
        in result.output
    )
    assert "family    mlp on cifar10" in result.output
    assert (
        "family    mlp on mnist" in CliRunner().invoke(main, ["best", "--dataset", "mnist"]).output
    )


def test_an_unwritable_export_path_is_one_line(store, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")  # unwritable even for root
    target = tmp_path / "a_file" / "m.keras"
    result = CliRunner().invoke(main, ["best", "--sweep", "tiny", "--export", str(target)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith(f"error: cannot write {target}: ")
    assert "Traceback" not in result.output


def test_best_loads_no_tensorflow_unless_it_exports(store):
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from sweeper.cli import main\n"
        "result = CliRunner().invoke(main, ['best', '--dataset', 'mnist'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(' '.join(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == []
