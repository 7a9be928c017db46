"""The command line through click's test runner: the light front door, listings, verbosity."""

import os
import subprocess
import sys

import yaml
from click.testing import CliRunner

from sweeper.cli import main

HEAVY = ("tensorflow", "keras", "mlflow", "optuna", "keras_tuner")


def loaded_after(*argv: str) -> list[str]:
    """Runs `sweeper ARGV` in a fresh interpreter; the heavy modules it imported."""
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from sweeper.cli import main\n"
        f"result = CliRunner().invoke(main, {list(argv)!r})\n"
        "assert result.exception is None or isinstance(result.exception, SystemExit), "
        "result.output\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_the_front_door_loads_no_heavy_library(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"dataset": "mnist", "families": {"cnn": {"dropout": 1.5}}}))
    for argv in (
        ["--help"],
        ["datasets"],
        ["params"],
        ["params", "cnn"],
        ["baseline", "--list"],
        ["sweep", str(bad)],
        ["sweep", "--help"],
    ):
        assert loaded_after(*argv) == [], argv


def test_importing_config_and_cli_loads_no_heavy_library():
    script = (
        f"import sys, sweeper.config, sweeper.cli, sweeper.schema, sweeper.engines\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == []


def test_params_lists_every_parameter_of_a_family_with_its_rule():
    result = CliRunner().invoke(main, ["params", "cnn_bn"])
    assert result.exit_code == 0, result.output
    for expected in (
        "batch_size",
        "learning_rate",
        "flip",
        "none, horizontal, vertical",
        "default 0.3",
    ):
        assert expected in result.output
    assert "hidden_layers" not in result.output  # mlp's


def test_params_of_an_unknown_family_lists_the_known_ones():
    result = CliRunner().invoke(main, ["params", "densenet"])
    assert result.exit_code == 2
    assert "Unknown family 'densenet'. Known: mlp, cnn, cnn_bn, resnet, transfer" in result.output


def test_engine_choices_come_from_the_registry(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("dataset: mnist\nfamilies: {mlp: {}}\n")
    result = CliRunner().invoke(main, ["sweep", str(path), "--engine", "hyperopt"])
    assert result.exit_code == 2
    assert "'optuna', 'keras-tuner'" in result.output


def test_datasets_lists_the_registry_and_where_each_is(data_dir):
    result = CliRunner().invoke(main, ["datasets", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    for name in ("mnist", "fashion_mnist", "cifar10"):
        assert f"local: {data_dir / name}" in result.output


def test_quiet_hides_progress_and_verbose_shows_it(workdir):
    from conftest import sweep_file

    path = sweep_file(workdir, "quiet", budget={"trials": 1, "max_epochs": 1})
    quiet = CliRunner().invoke(main, ["-q", "sweep", str(path)])
    assert quiet.exit_code == 0, quiet.output
    assert "trial cnn #0" not in quiet.output and "epoch 1/1" not in quiet.output
    loud = CliRunner().invoke(main, ["-v", "sweep", str(path), "--trials", "2"])
    assert loud.exit_code == 0, loud.output
    assert "(1 of 2 finished)" in loud.output and "epoch 1/1" in loud.output


def test_ctrl_c_stops_the_ui_quietly(tmp_path, tracking_uri):
    import signal
    import socket
    import time

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)  # the session's store: its tables exist already
    found = client.get_experiment_by_name("ui-check")
    made = found.experiment_id if found else client.create_experiment("ui-check")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    ui = subprocess.Popen(
        [sys.executable, "-m", "sweeper.cli", "ui", "--port", str(port)],
        # the store through the environment, as a user's MLFLOW_TRACKING_URI
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for _ in range(240):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    else:
        ui.kill()
        raise AssertionError(ui.communicate()[0])
    ui.send_signal(signal.SIGINT)
    out, _ = ui.communicate(timeout=60)
    assert ui.returncode == 0, out
    assert "MLflow UI stopped" in out and "Traceback" not in out, out
    assert "trial is marked failed" not in out
    assert f"  ui-check: http://127.0.0.1:{port}/#/experiments/{made}/runs" in out, out
