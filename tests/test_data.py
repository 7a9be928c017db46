import numpy as np
import pytest

from conftest import SHARED_DATA, needs_shared_data, write_image_folder
from sweeper import data
from sweeper.errors import DataError


def test_idx_files_load_with_a_seeded_validation_split(data_dir):
    ds = data.load("mnist", data_dir=data_dir, seed=3)
    assert ds.x_train.dtype == np.uint8 and ds.input_shape == (28, 28, 1)
    # the default split: 7,500 images, here capped at 20% of 200
    assert ds.sizes == {"train_size": 160, "val_size": 40, "test_size": 60}
    assert ds.class_names == tuple("0123456789")
    again = data.load("mnist", data_dir=data_dir, seed=3)
    assert again is ds  # loaded once per process
    other = data.load("mnist", data_dir=data_dir, seed=4)
    assert not np.array_equal(other.y_val, ds.y_val)


def test_npz_loads_cifar10_layout(data_dir):
    ds = data.load("cifar10", data_dir=data_dir)
    assert ds.input_shape == (32, 32, 3) and ds.n_classes == 10
    assert len(ds.y_test) == 50 and ds.class_names[0] == "airplane"


def test_limit_keeps_every_class_in_proportion_after_the_validation_split(data_dir):
    ds = data.load("fashion_mnist", data_dir=data_dir, limit=50)
    assert len(ds.y_train) == 50 and len(ds.y_val) == 40  # held out of all 200 first
    assert np.bincount(ds.y_train).tolist() == [5] * 10
    assert np.bincount(ds.y_val).tolist() == [4] * 10
    assert len(ds.y_test) == 60  # the test set stays whole
    full = data.load("fashion_mnist", data_dir=data_dir)
    assert np.array_equal(full.y_val, ds.y_val)  # a refit's validation images are the same


def test_default_validation_split_is_sized_for_half_a_point_of_noise():
    assert data.validation_size(60_000) == 7_500  # SE at 75%: sqrt(.75 * .25 / 7500) = 0.5%
    assert data.validation_size(50_000) == 7_500
    assert data.validation_size(200_000) == 20_000  # at least 10%
    assert data.validation_size(1_500) == 300  # at most 20%
    assert data.validation_size(1_500, 0.1) == 150


def test_stratified_sample_keeps_rare_classes():
    y = np.array([0] * 90 + [1] * 10)
    kept = data.stratified(y, 20, np.random.default_rng(0))
    assert np.bincount(y[kept]).tolist() == [18, 2]
    assert len(set(kept)) == 20 and np.all(np.diff(kept) > 0)
    other = data.stratified(y, 20, np.random.default_rng(1))
    assert not np.array_equal(kept, other)  # seeded


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


def test_skipped_images_are_a_param_of_the_sweep(workdir):
    import yaml
    from click.testing import CliRunner

    from sweeper import tracking
    from sweeper.cli import main

    # its own folder name: the session's store binds an experiment to one folder per name
    image_folder = write_image_folder(workdir / "skipped-pets")
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


def _save(image, path, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def test_photos_are_turned_by_their_exif_orientation(tmp_path):
    from PIL import Image

    photo = Image.new("RGB", (20, 10), (255, 0, 0))
    photo.paste((0, 0, 255), (10, 0, 20, 10))  # left red, right blue, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = _save(photo, tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    shown = data._decode(path, (10, 20))  # (width, height) as displayed: upright
    assert shown.shape == (20, 10, 3)
    assert shown[2, 5].tolist()[0] > 200 and shown[17, 5].tolist()[2] > 200  # red on top


def test_every_image_mode_becomes_8_bit_rgb(tmp_path):
    from PIL import Image

    gray16 = Image.fromarray(np.full((8, 8), 65535 // 2, dtype=np.uint16))
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    palette = Image.new("RGB", (8, 8), (0, 128, 0)).convert("P")
    files = {
        "gray.png": (Image.new("L", (8, 8), 100), [100, 100, 100]),
        "gray16.png": (gray16, [127, 127, 127]),
        "clear.png": (clear, [255, 255, 255]),  # transparency laid on white
        "palette.png": (palette, [0, 128, 0]),
        "cmyk.jpg": (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), [255, 0, 0]),
    }
    for name, (image, expected) in files.items():
        decoded = data._decode(_save(image, tmp_path / name), (4, 4))
        assert decoded.dtype == np.uint8 and decoded.shape == (4, 4, 3), name
        assert np.abs(decoded[2, 2].astype(int) - expected).max() <= 3, (name, decoded[2, 2])


def test_oversized_hidden_and_non_image_files_are_skipped_and_an_empty_class_named(
    image_folder, monkeypatch
):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # the test images have 1,200
    _save(Image.new("RGB", (100, 100)), image_folder / "cat" / "huge.png")  # a "bomb"
    (image_folder / "cat" / ".DS_Store").write_bytes(b"\0\1")
    (image_folder / "cat" / "._cat_0.png").write_bytes(b"macOS resource fork")
    (image_folder / "cat" / "notes.txt").write_text("not an image")
    _save(Image.new("RGB", (8, 8)), image_folder / ".ipynb_checkpoints" / "x.png")
    ds = data.load(f"folder:{image_folder}", image_size=(16, 16), seed=7)
    assert ds.class_names == ("cat", "dog")  # no hidden class
    assert ds.skipped_images == 1  # the bomb only: hidden and non-image files are not images
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 24
    for f in (image_folder / "dog").glob("*.png"):
        f.write_bytes(b"broken")
    with pytest.raises(DataError, match="no readable training image of class dog"):
        data.load(f"folder:{image_folder}", image_size=(16, 16), seed=8)
