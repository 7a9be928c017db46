"""sweeper's default sweep for a folder or CSV of images: sized to the images, valid, logged."""

from pathlib import Path

import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from conftest import write_image_folder
from sweeper import config, data, image_sweep, train
from sweeper.cli import main


def test_the_recipe_is_sized_to_the_images(tmp_path):
    folder = write_image_folder(tmp_path / "photos", ("a", "b", "c"), 500, size=(100, 80))
    text = image_sweep.default_sweep(f"folder:{folder}")
    body = yaml.safe_load(text)
    resnet = body["families"]["resnet"]
    assert body["data"]["image_size"] == [80, 80]  # the median shorter side
    # 1,500 images: 1,200 to train on, 240 of them held out: 960 -> batch 16, 60 steps
    assert resnet["batch_size"] == 16
    assert body["budget"]["max_epochs"] == 9  # >= 500 steps a trial
    assert resnet["learning_rate"] == {"float": [0.0031, 0.025], "log": True}  # 0.4 at 256
    assert resnet["translate"] == {"choice": [5, 10]}
    assert "transfer" not in body["families"]
    assert "1500 images in 3 classes" in text
    spec = config.from_text(text, "default")  # valid as any sweep file
    assert spec.study.startswith("photos-") and spec.minutes == image_sweep.MINUTES
    chosen = yaml.safe_load(image_sweep.default_sweep(f"folder:{folder}", image_size=48))
    assert chosen["data"]["image_size"] == [48, 48]


def test_trials_are_sized_by_the_measured_speed(tmp_path):
    folder = write_image_folder(tmp_path / "photos", ("a", "b", "c"), 500, size=(100, 80))
    asked = []

    def ten_ms(params, input_shape, n_classes):
        asked.append((params["width"], params["batch_size"], input_shape, n_classes))
        return 0.01  # an epoch: 10 ms x (960 trained + 240 / 3 predicted) = 10.4 s

    def epochs(minutes):
        text = image_sweep.default_sweep(f"folder:{folder}", minutes=minutes, time_an_image=ten_ms)
        return yaml.safe_load(text)["budget"]["max_epochs"], text

    assert epochs(30)[0] == 9  # 900 s of search / 4 trials: 21 epochs; 500 steps need 9
    short, text = epochs(4)  # 120 s / 4 trials: 2 epochs of 10.4 s each
    assert short == 2 and "10 ms a training image, ~10 s an epoch: 5.8 trials of 2" in text
    assert epochs(1)[0] == 1  # not even one epoch for 4 trials: one epoch, and it says so
    assert asked[0] == (32, 16, (80, 80, 3), 3)


def test_a_backbone_adds_the_transfer_family(tmp_path):
    folder = write_image_folder(tmp_path / "photos", ("a", "b"), 20)
    body = yaml.safe_load(image_sweep.default_sweep(f"folder:{folder}", backbone="mine.keras"))
    assert body["families"]["transfer"]["backbone"] == "mine.keras"
    imagenet = image_sweep.default_sweep(f"folder:{folder}", backbone="imagenet")
    transfer = yaml.safe_load(imagenet)["families"]["transfer"]
    assert (transfer["backbone"], transfer["weights"]) == ("vgg16", "imagenet")


def test_sweep_of_a_folder_needs_no_sweep_file(workdir, monkeypatch):
    measured, probe = [], train.seconds_per_image

    def ten_seconds(*args, **kwargs):  # an image: a trial of one epoch is all 10 minutes allow
        measured.append(probe(*args, **kwargs))  # the real measure runs
        return 10.0

    monkeypatch.setattr(train, "seconds_per_image", ten_seconds)
    folder = write_image_folder(workdir / "default-pets", ("cat", "dog"), 12)
    args = ["sweep", f"folder:{folder}", "--trials", "1", "--minutes", "10", "--refit-epochs", "0"]
    args += ["--image-size", "16"]  # a small ResNet: the test is about what runs, not how well
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"sweeper's default for folder:{folder}: 24 images in 2 classes" in result.output
    assert "Measured here: 1e+04 ms a training image" in result.output
    assert len(measured) == 1 and 0 < measured[0] < 1  # seconds a 16x16 image took here
    client = MlflowClient()
    experiment = client.get_experiment_by_name("default-pets")
    parent = client.search_runs([experiment.experiment_id], "tags.kind = 'sweep'")[0]
    logged = client.download_artifacts(parent.info.run_id, "sweep.yaml", str(workdir))
    written = yaml.safe_load(Path(logged).read_text())
    assert written["dataset"] == f"folder:{folder}" and written["budget"]["max_epochs"] == 1
    args[args.index("--minutes") : args.index("--minutes") + 2] = ["--epochs", "1"]  # no probe
    # another folder of the same name: its own experiment and study, nothing mixed
    other = write_image_folder(workdir / "elsewhere" / "default-pets", ("cat", "dog"), 12)
    again = CliRunner().invoke(main, [*args[:1], f"folder:{other}", *args[2:]])
    assert again.exit_code == 0, again.output
    assert len(measured) == 1  # --epochs chose the epochs: nothing was timed
    name = data.unique_name(f"folder:{other}")
    second = client.get_experiment_by_name(name)
    assert second and name != "default-pets" and f"go to experiment {name}" in again.output
    runs = client.search_runs([second.experiment_id], "tags.kind = 'sweep'")
    assert [r.data.tags["dataset"] for r in runs] == [name]
    for dataset, experiment_id in (
        ("default-pets", experiment.experiment_id),
        (name, second.experiment_id),
    ):
        best = CliRunner().invoke(main, ["best", "--dataset", dataset])
        assert best.exit_code == 0, best.output
        run_id = next(w for w in best.output.split() if len(w) == 32)
        assert client.get_run(run_id).info.experiment_id == experiment_id
    wrong = CliRunner().invoke(main, ["sweep", "sweeps/mnist.yaml", "--backbone", "x.keras"])
    assert wrong.exit_code == 2 and "for folder: or csv: datasets" in wrong.output
