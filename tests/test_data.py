import numpy as np
import pytest

from conftest import SHARED_DATA, needs_shared_data, write_image_folder
from sweeper import data
from sweeper.errors import DataError


def test_idx_files_load_with_a_seeded_validation_split(data_dir):
    ds = data.load("mnist", data_dir=data_dir, seed=3)
    assert ds.x_train.dtype == np.uint8 and ds.input_shape == (28, 28, 1)
    assert ds.sizes == {"train_size": 180, "val_size": 20, "test_size": 60}
    assert ds.class_names == tuple("0123456789")
    again = data.load("mnist", data_dir=data_dir, seed=3)
    assert again is ds  # loaded once per process
    other = data.load("mnist", data_dir=data_dir, seed=4)
    assert not np.array_equal(other.y_val, ds.y_val)


def test_npz_loads_cifar10_layout(data_dir):
    ds = data.load("cifar10", data_dir=data_dir)
    assert ds.input_shape == (32, 32, 3) and ds.n_classes == 10
    assert len(ds.y_test) == 50 and ds.class_names[0] == "airplane"


def test_limit_takes_the_first_training_images(data_dir):
    ds = data.load("fashion_mnist", data_dir=data_dir, limit=50)
    assert len(ds.y_train) + len(ds.y_val) == 50
    assert len(ds.y_test) == 60  # the test set stays whole


def test_env_var_names_the_data_dir(data_dir, monkeypatch):
    monkeypatch.setenv("SWEEPER_DATA_DIR", str(data_dir))
    assert data.load("mnist").sizes["test_size"] == 60


def test_folder_with_one_root_splits_80_20(image_folder):
    ds = data.load(f"folder:{image_folder}", image_size=(20, 24))
    assert ds.class_names == ("cat", "dog")
    assert ds.input_shape == (20, 24, 3)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 24
    assert len(ds.y_test) == 5 and ds.name == "pets"


def test_folder_with_training_and_test_pair(tmp_path):
    write_image_folder(tmp_path / "fruits" / "Training", ("apple", "kiwi", "pear"), 6)
    write_image_folder(tmp_path / "fruits" / "Test", ("apple", "kiwi", "pear"), 2)
    ds = data.load(f"folder:{tmp_path / 'fruits'}", image_size=(16, 16))
    assert ds.class_names == ("apple", "kiwi", "pear")
    assert len(ds.y_test) == 6 and len(ds.y_train) + len(ds.y_val) == 18


def test_unreadable_images_are_skipped_and_counted(image_folder, caplog, monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger("sweeper"), "propagate", True)  # to caplog
    (image_folder / "cat" / "broken.jpg").write_bytes(b"not an image")
    with caplog.at_level("WARNING", logger="sweeper"):
        ds = data.load(f"folder:{image_folder}", image_size=(16, 16), seed=1)
    assert ds.skipped_images == 1
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 24
    assert "skipped 1 unreadable image(s) of 25" in caplog.text


def test_skipped_images_are_a_param_of_the_sweep(workdir, image_folder):
    import yaml
    from click.testing import CliRunner

    from sweeper import tracking
    from sweeper.cli import main

    (image_folder / "dog" / "broken.png").write_bytes(b"not an image")
    path = workdir / "pets.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "dataset": f"folder:{image_folder}",
                "data": {"image_size": [16, 16]},
                "study": "pets-skipped",
                "budget": {"trials": 1, "max_epochs": 1},
                "families": {"mlp": {"units": 8}},
            }
        )
    )
    result = CliRunner().invoke(main, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning: folder:" in result.output and "skipped 1 unreadable" in result.output
    [parent] = tracking.search_runs({"kind": "sweep", "study": "pets-skipped"})
    assert parent.data.params["skipped_images"] == "1"


def test_a_named_dataset_is_one_registry_entry(tmp_path, monkeypatch):
    (tmp_path / "tiny").mkdir()
    x = np.zeros((20, 8, 8), np.uint8)
    y = np.arange(20) % 2
    np.savez(tmp_path / "tiny" / "tiny.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    entry = data.NamedDataset(
        "tiny", (8, 8, 1), ("off", "on"), ("tiny.npz",), data.read_npz, "tiny"
    )
    monkeypatch.setitem(data.NAMED, "tiny", entry)
    ds = data.load("tiny", data_dir=tmp_path)
    assert ds.input_shape == (8, 8, 1) and ds.class_names == ("off", "on")
    assert "tiny" in data.known_names()


def test_csv_of_filenames_and_labels(image_folder):
    rows = ["filename,label"] + [f"{c}/{c}_{i}.png,{c}" for c in ("cat", "dog") for i in range(12)]
    (image_folder / "labels.csv").write_text("\n".join(rows))
    ds = data.load(f"csv:{image_folder / 'labels.csv'}", image_size=(16, 16))
    assert ds.class_names == ("cat", "dog") and ds.name == "labels"
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 24


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(
        DataError,
        match=r"Unknown dataset 'imagenet'. Known: mnist, "
        r"fashion_mnist, cifar10, folder:PATH, csv:PATH.csv",
    ):
        data.load("imagenet")


def test_missing_file_names_the_path_and_the_files_expected(tmp_path):
    (tmp_path / "mnist").mkdir()
    with pytest.raises(DataError) as error:
        data.load("mnist", data_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in message
    assert "expected train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in message


def test_folder_without_class_subfolders_is_refused(tmp_path):
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="one subfolder per class"):
        data.load(f"folder:{tmp_path / 'flat'}")


def test_csv_with_a_short_row_is_refused(tmp_path):
    (tmp_path / "bad.csv").write_text("a.png,cat\nb.png\n")
    with pytest.raises(DataError, match="row 2 has fewer than 2 columns"):
        data.load(f"csv:{tmp_path / 'bad.csv'}")


def test_csv_listing_missing_files_names_the_first_and_counts_them(image_folder):
    rows = [f"{c}/{c}_{i}.png,{c}" for c in ("cat", "dog") for i in range(12)]
    rows += ["elsewhere/x.png,cat", "elsewhere/y.png,dog"]
    (image_folder / "moved.csv").write_text("\n".join(rows))
    with pytest.raises(DataError) as error:
        data.load(f"csv:{image_folder / 'moved.csv'}", image_size=(16, 16))
    message = str(error.value)
    assert "2 of 26 listed image(s) not found" in message
    assert str(image_folder / "elsewhere" / "x.png") in message
    assert "resolve from the CSV's own folder" in message


def test_a_download_without_network_says_where_to_put_the_files(monkeypatch):
    import keras

    def offline():
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: [Errno -3]")

    monkeypatch.delenv("SWEEPER_DATA_DIR", raising=False)
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    with pytest.raises(DataError) as error:
        data.load("fashion_mnist", limit=7)
    message = str(error.value)
    assert message.startswith("fashion_mnist: Keras could not download it (Exception: URL fetch")
    assert "DIR/fashion_mnist/ and give --data-dir DIR or set SWEEPER_DATA_DIR=DIR" in message
    assert "\n" not in message


@needs_shared_data("mnist")
def test_real_mnist_from_shared_data():
    ds = data.load("mnist", data_dir=SHARED_DATA)
    assert len(ds.y_train) + len(ds.y_val) == 60000 and len(ds.y_test) == 10000
    assert np.bincount(ds.y_test).tolist()[:3] == [980, 1135, 1032]


@needs_shared_data("cifar10")
def test_real_cifar10_from_shared_data():
    ds = data.load("cifar10", data_dir=SHARED_DATA)
    assert ds.x_test.shape == (10000, 32, 32, 3)
    assert np.bincount(ds.y_test).tolist() == [1000] * 10


def test_a_csv_kept_apart_from_its_images_reads_them_from_image_dir(image_folder, tmp_path):
    rows = [f"{c}/{c}_{i}.png,{c}" for c in ("cat", "dog") for i in range(12)]
    labels = tmp_path / "labels" / "pets.csv"
    labels.parent.mkdir()
    labels.write_text("\n".join(rows))
    with pytest.raises(DataError, match="24 of 24 listed image"):
        data.load(f"csv:{labels}", image_size=(16, 16))
    ds = data.load(f"csv:{labels}", image_size=(16, 16), image_dir=image_folder)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 24
    assert ds.options["image_dir"] == str(image_folder.resolve())  # logged: a rerun finds them
    with pytest.raises(DataError, match="for csv: datasets only"):
        data.load("mnist", image_dir=image_folder)
