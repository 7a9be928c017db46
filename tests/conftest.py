"""Tiny datasets the tests write themselves, and an MLflow store per test session."""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Decoded folders go to a cache of the session's own, not the user's ~/.cache
os.environ.setdefault("SWEEPER_CACHE_DIR", tempfile.mkdtemp(prefix="sweeper-cache-"))
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def patterned_images(n, shape, n_classes, seed=0):
    """Images whose mean brightness depends on the class, so a model can learn a little."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.integers(0, 60, size=(n, *shape)) + (y * (190 // max(n_classes - 1, 1))).reshape(
        -1, *([1] * len(shape))
    )
    return x.astype(np.uint8), y.astype(np.uint8)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data directory in shared/data's layout: tiny mnist, fashion_mnist and cifar10."""
    root = tmp_path_factory.mktemp("data")
    for name in ("mnist", "fashion_mnist"):
        (root / name).mkdir()
        x, y = patterned_images(200, (28, 28), 10)
        xt, yt = patterned_images(60, (28, 28), 10, seed=1)
        write_idx(root / name / "train-images-idx3-ubyte.gz", x)
        write_idx(root / name / "train-labels-idx1-ubyte.gz", y)
        write_idx(root / name / "t10k-images-idx3-ubyte.gz", xt)
        write_idx(root / name / "t10k-labels-idx1-ubyte.gz", yt)
    (root / "cifar10").mkdir()
    x, y = patterned_images(150, (32, 32, 3), 10)
    xt, yt = patterned_images(50, (32, 32, 3), 10, seed=1)
    np.savez_compressed(
        root / "cifar10" / "cifar10.npz", x_train=x, y_train=y, x_test=xt, y_test=yt
    )
    return root


def write_image_folder(root: Path, classes=("cat", "dog"), per_class=12, size=(40, 30)):
    from PIL import Image

    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        x, _ = patterned_images(per_class, (size[1], size[0], 3), len(classes), seed=c)
        for i in range(per_class):
            Image.fromarray(np.clip(x[i].astype(int) + 100 * c, 0, 255).astype(np.uint8)).save(
                root / name / f"{name}_{i}.png"
            )
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "pets")


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """One SQLite MLflow store for the session (creating its tables takes seconds)."""
    import mlflow

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture
def workdir(tmp_path, monkeypatch, tracking_uri, data_dir):
    """Runs the test inside a fresh folder, as a user in their project would."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("SWEEPER_DATA_DIR", str(data_dir))
    return tmp_path


def needs_shared_data(name):
    return pytest.mark.skipif(
        not (SHARED_DATA / name).is_dir(), reason=f"real {name} not found at {SHARED_DATA / name}"
    )


TINY_SWEEP = {
    "dataset": "mnist",
    "engine": "optuna",
    "sampler": "tpe",
    "pruner": "none",
    "budget": {"trials": 3, "max_epochs": 1},
    "families": {
        # holds the cnn-mnist recipe (filters 32, dense 100), so it runs first
        "cnn": {
            "filters": {"choice": [4, 32]},
            "dense_units": {"choice": [8, 100]},
            "kernel_initializer": "he_uniform",
            "early_stopping_patience": 2,
            "learning_rate": {"float": [1e-4, 1e-2], "log": True},
        },
        "mlp": {"units": {"int": [8, 32], "step": 8}},
    },
}


def sweep_file(tmp_path, study, **changes):
    path = tmp_path / f"{study}.yaml"
    path.write_text(yaml.safe_dump({**TINY_SWEEP, "study": study, **changes}))
    return path


@pytest.fixture(scope="session")
def swept(tmp_path_factory, data_dir):
    """A 7-trial sweep on tiny mnist, with the cnn-mnist baseline run beside it."""
    from click.testing import CliRunner

    from sweeper.cli import main

    folder = tmp_path_factory.mktemp("results")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("SWEEPER_DATA_DIR", str(data_dir))
        path = folder / "tiny.yaml"
        path.write_text(
            yaml.safe_dump(
                {**TINY_SWEEP, "study": "tiny", "budget": {"trials": 7, "max_epochs": 1}}
            )
        )
        for args in (["sweep", str(path)], ["baseline", "cnn-mnist", "--epochs", "1"]):
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 0, result.output
        yield folder, uri


@pytest.fixture
def store(swept, monkeypatch, data_dir):
    import mlflow

    folder, uri = swept
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SWEEPER_DATA_DIR", str(data_dir))
    mlflow.set_tracking_uri(uri)
    return folder
