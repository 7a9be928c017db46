from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from conftest import write_image_folder
from sweeper import baselines, families, schema
from sweeper.cli import main


def test_every_recipe_names_a_family_and_only_its_parameters():
    for b in baselines.BASELINES.values():
        assert b.family in families.FAMILIES
        assert set(b.params) <= set(schema.params_of(b.family)), b.name
        schema.resolve(b.family, b.params)  # every value allowed by the schema


def test_list_prints_the_six_recipes_with_documented_results():
    out = CliRunner().invoke(main, ["baseline", "--list"]).output
    for name in (
        "mlp-mnist",
        "cnn-mnist",
        "cnn-cifar10",
        "transfer-folder",
        "cnn_bn-fashion_mnist",
        "cnn-catsdogs",
    ):
        assert name in out
    assert "98.50%" in out and "71.53%" in out


def test_baseline_runs_as_documented_and_is_tagged(workdir):
    result = CliRunner().invoke(main, ["baseline", "cnn-mnist", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    run_id = result.output.strip().split()[-1]
    run = MlflowClient().get_run(run_id)
    assert run.data.tags["kind"] == "baseline"
    assert run.data.tags["documented_accuracy"] == "0.985"
    assert run.data.params["kernel_initializer"] == "he_uniform"
    assert run.data.params["early_stopping_patience"] == "2"
    assert run.data.metrics["params_count"] == 628_630


def test_catsdogs_runs_on_any_two_class_folder(workdir):
    # its own folder name: the session's store binds an experiment to one folder per name
    image_folder = write_image_folder(workdir / "catsdogs-pets")
    result = CliRunner().invoke(
        main,
        [
            "baseline",
            "cnn-catsdogs",
            "--dataset",
            f"folder:{image_folder}",
            "--epochs",
            "1",
            "--set",
            "filters=4",
            "--set",
            "dense_units=8",
        ],
    )
    assert result.exit_code == 0, result.output
    run = MlflowClient().get_run(result.output.strip().split()[-1])
    assert run.data.params["loss"] == "mse" and run.data.params["dataset"] == "catsdogs-pets"


def test_transfer_baseline_with_random_weights(workdir):
    image_folder = write_image_folder(workdir / "transfer-pets")
    result = CliRunner().invoke(
        main,
        [
            "baseline",
            "transfer-folder",
            "--dataset",
            f"folder:{image_folder}",
            "--epochs",
            "1",
            "--set",
            "weights=none",
            "--set",
            "input_size=32",
            "--set",
            "fine_tune_epochs=1",
            "--set",
            "dense_units=8",
        ],
    )
    assert result.exit_code == 0, result.output
    run = MlflowClient().get_run(result.output.strip().split()[-1])
    assert run.data.metrics["epochs"] == 2  # one epoch of the head, one of fine-tuning


def test_folder_recipe_without_a_folder_says_what_to_pass(workdir):
    result = CliRunner().invoke(main, ["baseline", "transfer-folder"])
    assert result.exit_code == 2
    assert "pass --dataset folder:PATH" in result.output


def test_unknown_baseline_and_parameter_are_refused(workdir):
    result = CliRunner().invoke(main, ["baseline", "resnet-imagenet"])
    assert result.exit_code == 2 and "Known: mlp-mnist, cnn-mnist" in result.output
    result = CliRunner().invoke(main, ["baseline", "cnn-mnist", "--set", "filtres=3"])
    assert result.exit_code == 2 and "Unknown parameter(s) for family cnn: filtres" in result.output


def test_a_flipping_recipe_is_refused_on_digits(workdir):
    result = CliRunner().invoke(main, ["baseline", "resnet-cifar10", "--dataset", "mnist"])
    assert result.exit_code == 2
    assert (
        "resnet-cifar10 on mnist: flip=horizontal and tta=flip mirror the images, and a "
        "mirrored image of mnist is no longer of its class; add --set flip=none --set tta=none"
    ) in result.output


def test_sigterm_ends_a_baseline_run_failed_not_running(tmp_path, data_dir):
    import os
    import signal
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "SWEEPER_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "sweeper.cli", "baseline", "mlp-mnist", "--epochs", "500"]
    baseline = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in baseline.stdout:  # the run is open and training once epochs are printed
        if "epoch 2/500" in line:
            break
    baseline.send_signal(signal.SIGTERM)  # what a scheduler or `docker stop` sends
    rest, _ = baseline.communicate(timeout=120)
    assert baseline.returncode == 130, rest
    client = MlflowClient(uri)
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FAILED" and run.data.tags["state"] == "failed"
