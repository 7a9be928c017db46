"""The documented recipes (shared/baselines.md), each runnable exactly as written.

Each family's sweep space contains its baseline as one point, and sweeps enqueue it as the
family's first trial, so every sweep shows the baseline and what beat it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sweeper import schema
from sweeper.errors import SweeperError


@dataclass(frozen=True)
class Baseline:
    name: str
    family: str
    dataset: str | None  # None: the user names an image folder
    params: dict
    epochs: int
    documented_accuracy: float | None
    source: str
    data_options: dict = field(default_factory=dict)


# The fast CIFAR-10 recipe of shared/recipes.md (cifar10-fast and airbench, measured on this
# CPU): Nesterov SGD with decoupled weight decay, warmup then cosine, label smoothing, shifts
# and flips, BatchNorm momentum 0.9 and logits x0.125. Not one of the five tutorials: the
# sweeps start from it so that a ResNet is always among their first trials.
RESNET_RECIPE = {
    "width": 32,
    "stages": 3,
    "residual": "alternate",
    "bn_momentum": 0.9,
    "logit_scale": 0.125,
    "batch_size": 256,
    "optimizer": "sgd",
    "nesterov": True,
    "momentum": 0.9,
    "learning_rate": 0.4,
    "weight_decay": 5e-4,
    "lr_schedule": "cosine",
    "warmup_fraction": 0.2,
    "label_smoothing": 0.2,
    "translate": 4,
    "flip": "horizontal",
    "cutout": 0,
    "tta": "flip",
    "early_stopping_patience": 0,
}

BASELINES = {
    b.name: b
    for b in [
        Baseline(
            "mlp-mnist",
            "mlp",
            "mnist",
            {
                "hidden_layers": 2,
                "units": 128,
                "dropout": 0.25,
                "optimizer": "adamax",
                "learning_rate": 0.01,
                "lr_schedule": "exponential",
                "decay_steps": 2000,
                "decay_rate": 0.9,
                "batch_size": 128,
                "early_stopping_patience": 0,
            },
            epochs=50,
            documented_accuracy=None,
            source="B1: Dense(128)-Dense(128)-Dropout(0.25), Adamax with ExponentialDecay, "
            "50 epochs",
        ),
        Baseline(
            "cnn-mnist",
            "cnn",
            "mnist",
            {
                "conv_blocks": 1,
                "filters": 32,
                "kernel_size": 3,
                "dense_layers": 1,
                "dense_units": 100,
                "dropout": 0.2,
                "kernel_initializer": "he_uniform",
                "optimizer": "adam",
                "learning_rate": 0.001,
                "lr_schedule": "constant",
                "batch_size": 128,
                "early_stopping_patience": 2,
            },
            epochs=10,
            documented_accuracy=0.985,
            source="B2: Conv(32)-MaxPool-Dense(100)-Dropout(0.2), Adam, batch 128, patience 2",
        ),
        Baseline(
            "cnn-cifar10",
            "cnn",
            "cifar10",
            {
                "conv_blocks": 2,
                "filters": 32,
                "kernel_size": 3,
                "dense_layers": 1,
                "dense_units": 100,
                "dropout": 0.2,
                "kernel_initializer": "glorot_uniform",
                "optimizer": "adam",
                "learning_rate": 0.001,
                "lr_schedule": "constant",
                "batch_size": 32,
                "early_stopping_patience": 5,
            },
            epochs=100,
            documented_accuracy=0.7153,
            source="B3: Conv(32)-Pool-Conv(64)-Pool-Dense(100)-Dropout(0.2), Adam, batch 32",
        ),
        Baseline(
            "transfer-folder",
            "transfer",
            None,
            {
                "backbone": "vgg16",
                "weights": "imagenet",
                "input_size": 96,
                "dense_units": 519,
                "dropout": 0.5,
                "optimizer": "adam",
                "learning_rate": 0.001,
                "batch_size": 32,
                "fine_tune_layers": 4,
                "fine_tune_epochs": 3,
                "fine_tune_learning_rate": 1e-5,
                "early_stopping_patience": 3,
                "early_stopping_monitor": "val_accuracy",
            },
            epochs=20,
            documented_accuracy=0.98289,
            source="B4: frozen VGG16 (ImageNet) + Dense(519)-Dropout(0.5), then fine-tune block 5",
            data_options={"image_size": (100, 100)},
        ),
        Baseline(
            "cnn_bn-fashion_mnist",
            "cnn_bn",
            "fashion_mnist",
            {
                "conv_blocks": 2,
                "filters": 32,
                "kernel_size": 3,
                "dense_units": 128,
                "dropout": 0.3,
                "flip": "horizontal",
                "rotation": 0.05,
                "zoom": 0.1,
                "contrast": 0.1,
                "optimizer": "adam",
                "learning_rate": 0.001,
                "batch_size": 64,
                "early_stopping_patience": 3,
            },
            epochs=15,
            documented_accuracy=None,
            source="B5: Conv-BN-ReLU-MaxPool x2, Dense-Dropout, flips/rotations/zooms/contrast "
            "(BatchNorm momentum 0.9 here, not Keras' 0.99, which lags in short trials)",
        ),
        Baseline(
            "cnn-catsdogs",
            "cnn",
            None,
            {
                "conv_blocks": 2,
                "filters": 64,
                "kernel_size": 3,
                "dense_layers": 2,
                "dense_units": 512,
                "dropout": 0.0,
                "optimizer": "adam",
                "learning_rate": 1e-4,
                "batch_size": 32,
                "loss": "mse",
                "early_stopping_patience": 3,
            },
            epochs=20,
            documented_accuracy=0.75,
            source="B6: Conv(64)-Pool-Conv(128)-Pool-Dense(512)x2, Adam, MSE on the class "
            "probabilities, any two-class folder",
            data_options={"image_size": (94, 125)},
        ),
        Baseline(
            "resnet-cifar10",
            "resnet",
            "cifar10",
            RESNET_RECIPE,
            epochs=12,
            documented_accuracy=None,
            source="shared/recipes.md (ResNet-9 shape, width 32, bf16), measured here: 89.3% "
            "(90.1% flip TTA) after 12 epochs",
        ),
        Baseline(
            "resnet-fashion_mnist",
            "resnet",
            "fashion_mnist",
            {**RESNET_RECIPE, "translate": 2},
            epochs=10,
            documented_accuracy=None,
            source="shared/recipes.md, the same recipe on Fashion-MNIST, measured here: 93.7% "
            "(93.8% flip TTA) after 10 epochs",
        ),
        Baseline(
            "resnet-mnist",
            "resnet",
            "mnist",
            {
                **RESNET_RECIPE,
                "width": 16,
                "learning_rate": 0.2,
                "label_smoothing": 0.1,
                "translate": 2,
                "flip": "none",
                "tta": "none",
            },
            epochs=8,
            documented_accuracy=None,
            source="the CIFAR-10 recipe at width 16 for digits: no flips; sweeper's own",
        ),
    ]
}


def get(name: str) -> Baseline:
    if name not in BASELINES:
        raise SweeperError(f"Unknown baseline {name!r}. Known: {', '.join(BASELINES)}")
    return BASELINES[name]


def for_family(family: str, dataset: str) -> Baseline | None:
    """The recipe a sweep of `family` on `dataset` starts from: same dataset first."""
    matches = [b for b in BASELINES.values() if b.family == family]
    same = [b for b in matches if b.dataset == dataset]
    return (same or matches or [None])[0]  # type: ignore[list-item]


def run(
    baseline: Baseline,
    *,
    dataset: str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    overrides: dict | None = None,
    data_dir: str | None = None,
    limit: int | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Trains the recipe as documented and logs it with kind=baseline; returns a summary."""
    from sweeper import data, runner, tracking
    from sweeper.tracking import names

    params = schema.resolve(baseline.family, {**baseline.params, **(overrides or {})})
    name = dataset or baseline.dataset
    if name is None:
        raise SweeperError(
            f"Baseline {baseline.name} runs on an image folder: pass "
            "--dataset folder:PATH (or csv:PATH.csv)"
        )
    mirrors = [f"{k}={params[k]}" for k in ("flip", "tta") if params[k] != "none"]
    if mirrors and not data.mirror_safe(name):
        raise SweeperError(
            f"{baseline.name} on {name}: {' and '.join(mirrors)} mirror the images, and a "
            f"mirrored image of {name} is no longer of its class; add "
            + " ".join(f"--set {m.split('=')[0]}=none" for m in mirrors)
        )
    ds = data.load(name, data_dir=data_dir, limit=limit, seed=seed, **baseline.data_options)
    tracking.configure(tracking_uri)
    ds = tracking.own_experiment(ds)
    epochs = epochs or baseline.epochs
    tags = {
        names.KIND: names.KIND_BASELINE,
        names.BASELINE: baseline.name,
        names.DOCUMENTED_ACCURACY: baseline.documented_accuracy or "not printed",
    }
    result, run_ = runner.tracked_trial(
        baseline.family,
        params,
        ds,
        experiment=tracking.experiment_id(ds.name, ds.identity),
        run_name=f"baseline {baseline.name}",
        epochs=epochs,
        seed=seed,
        tags=tags,
    )
    documented = (
        f", documented {baseline.documented_accuracy:.2%}" if baseline.documented_accuracy else ""
    )
    return (
        f"{baseline.name}: test_accuracy {result.test['test_accuracy']:.4f}{documented}; "
        f"{result.epochs} epochs in {result.train_seconds:.0f}s; run {run_.run_id}"
    )
