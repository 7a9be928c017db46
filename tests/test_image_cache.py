"""The image cache: decoded once, re-read when the folder changes, never half-written, and
read back row for row."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sweeper import data, image_cache, train


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(image_cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "images"


def _pngs(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        files.append(folder / f"{i}.png")
        Image.fromarray(np.full((6, 5, 3), i * 10, np.uint8)).save(files[-1])
    return files


class Counting:
    """`data._decode` at 4 x 4 that counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, path):
        self.calls += 1
        return data._decode(path, (4, 4))


def test_images_are_decoded_once_and_read_back_row_for_row(tmp_path, cache):
    files = _pngs(tmp_path / "pngs", 5)
    decode = Counting()
    images, readable = image_cache.decoded(files, (4, 4), decode)
    again, _ = image_cache.decoded(files, (4, 4), decode)
    assert decode.calls == 5  # the second listing read the cache
    assert readable.all() and images.shape == (5, 4, 4, 3) and again.path == images.path
    expected = np.stack([data._decode(f, (4, 4)) for f in files])
    np.testing.assert_array_equal(np.asarray(images), expected)
    view = images[np.array([4, 1])]
    assert isinstance(view, image_cache.DiskImages) and view.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(view.read(), expected[[4, 1]])
    np.testing.assert_array_equal(images[1:3].concat(view).read(), expected[[1, 2, 4, 1]])


def test_a_changed_folder_is_decoded_again(tmp_path, cache):
    files = _pngs(tmp_path / "pngs", 3)
    first, _ = image_cache.decoded(files, (4, 4), Counting())
    Image.fromarray(np.full((6, 5, 3), 250, np.uint8)).save(files[0])
    os.utime(files[0], ns=(1, 1))  # a rewrite the same second still differs in mtime
    decode = Counting()
    second, _ = image_cache.decoded(files, (4, 4), decode)
    assert decode.calls == 3 and second.path != first.path
    assert np.asarray(second)[0].min() == 250
    resized, _ = image_cache.decoded(files, (8, 8), lambda f: data._decode(f, (8, 8)))
    assert resized.path != second.path and resized.shape == (3, 8, 8, 3)  # a size: its own


def test_unreadable_files_are_marked_and_an_interrupted_decode_leaves_nothing(tmp_path, cache):
    files = _pngs(tmp_path / "pngs", 3)
    (tmp_path / "pngs" / "1.png").write_bytes(b"not a png")
    _, readable = image_cache.decoded(files, (4, 4), Counting())
    assert readable.tolist() == [True, False, True]

    def failing(path):
        if path.name == "2.png":
            raise KeyboardInterrupt
        return data._decode(path, (4, 4))

    os.utime(files[0], ns=(2, 2))  # a new listing, decoded afresh
    with pytest.raises(KeyboardInterrupt):
        image_cache.decoded(files, (4, 4), failing)
    entries = [p.name for p in cache.iterdir() if p.is_dir()]
    assert len(entries) == 1 and "partial" not in entries[0]  # the first listing's only
    decode = Counting()
    image_cache.decoded(files, (4, 4), decode)
    assert decode.calls == 3


def test_a_folder_dataset_stays_on_disk_and_trains_from_it(tmp_path, cache):
    for label in ("a", "b"):
        _pngs(tmp_path / "folder" / label, 12)
    ds = data.load(f"folder:{tmp_path / 'folder'}", image_size=(4, 4), val_fraction=0.25)
    assert all(isinstance(x, image_cache.DiskImages) for x in (ds.x_train, ds.x_val, ds.x_test))
    assert image_cache.size_of(ds.x_train) == 0
    merged = ds.merged()
    assert isinstance(merged.x_train, image_cache.DiskImages)
    assert len(merged.x_train) == len(ds.y_train) + len(ds.y_val)
    # every image once an epoch, with its own label: the label is in the pixels here
    x = ds.x_train
    y = np.asarray(x)[:, 0, 0, 0].astype(np.int64)
    epochs = 2
    seen = list(train.shuffled_batches(x, y, 5, epochs, seed=0))
    pixels = np.concatenate([b[0].numpy() for b in seen])
    labels = np.concatenate([b[1].numpy() for b in seen])
    np.testing.assert_array_equal(pixels[:, 0, 0, 0], labels)
    assert sorted(labels[: len(y)].tolist()) == sorted(y.tolist())
    result = train.train("mlp", {"batch_size": 8, "tta": "flip"}, ds, epochs=1, seed=0)
    assert len(result.test_probabilities) == len(ds.y_test)
    assert "test_accuracy_tta" in result.test


def test_processes_that_need_one_listing_together_decode_it_once(tmp_path, cache):
    files = _pngs(tmp_path / "pngs", 3)
    decode = Counting()

    def slow(path):
        time.sleep(0.2)  # long enough that the second caller arrives while the first decodes
        return decode(path)

    with ThreadPoolExecutor(2) as pool:  # flock excludes two open files in one process too
        found = list(pool.map(lambda _: image_cache.decoded(files, (4, 4), slow)[0].path, [0, 1]))
    assert decode.calls == 3 and found[0] == found[1]
