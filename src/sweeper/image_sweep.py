"""The sweep file `sweeper sweep folder:PATH` (or `csv:FILE.csv`) runs when given no file of
its own: the ResNet recipe sized to the images, written out so the user can copy and edit it.

Light, like `config`: it reads the folder's listing and a sample of image headers, never the
pixels, and no TensorFlow.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import yaml

from sweeper import data
from sweeper.policy import trial_epoch_seconds

MINUTES = 30  # the whole sweep, search and refit, unless --minutes says otherwise
SEARCH_SHARE = 0.5  # of the minutes; the refit has the rest
SIDES = (32, 128)  # the input side chosen from the images' sizes stays within these
STEPS_PER_TRIAL = 500  # a trial's epochs are those that give it at least this many steps,
SEARCH_TRIALS = 4  # unless fewer let the search hold this many trials at the measured speed
LIMIT = 18000  # training images a trial uses, on large collections (the refit uses all)


def default_sweep(
    source: str,
    *,
    image_size: int | None = None,
    backbone: str | None = None,
    image_dir: str | None = None,
    minutes: float = MINUTES,
    time_an_image: Callable[[dict, tuple[int, ...], int], float] | None = None,
) -> str:
    """The YAML text of a sweep over `source`'s images for `minutes`: a ResNet whose input
    side is the images' median shorter side (or `image_size`), whose batch size and epochs
    follow the number of images (enough steps on a small folder, a 0.4 learning rate at
    batch 256 scaled linearly); with `time_an_image(params, input_shape, classes)` (seconds
    a training image takes the recipe here), no more epochs than let the search hold
    `SEARCH_TRIALS` trials. Beside it, the transfer family on `backbone` (a `.keras` model
    of your own, or `imagenet`) when one is given."""
    survey = data.survey(source, image_dir)
    side = image_size or _side(survey.shorter_sides)
    training = round(survey.images * 0.8)  # the test split (or a Test/ folder) is apart
    validation = data.validation_size(training)
    training -= validation
    trial_images = min(training, LIMIT)
    batch = _batch_size(trial_images)
    steps = math.ceil(trial_images / batch)
    epochs = min(30, max(4, math.ceil(STEPS_PER_TRIAL / steps)))
    scale = batch / 256
    resnet = {
        "width": 32,
        "stages": 3,
        "residual": "alternate",
        "logit_scale": 0.125,
        "batch_size": batch,
        "optimizer": "sgd",
        "nesterov": True,
        "momentum": 0.9,
        "lr_schedule": "cosine",
        "early_stopping_patience": 0,
        "learning_rate": {"float": [_round(0.05 * scale), _round(0.4 * scale)], "log": True},
        "weight_decay": {"float": [2.0e-4, 1.0e-3], "log": True},
        "bn_momentum": {"choice": [0.8, 0.9]},
        "warmup_fraction": {"choice": [0.1, 0.2, 0.3]},
        "label_smoothing": {"choice": [0.1, 0.2]},
        "translate": {"choice": sorted({max(1, side // 16), max(2, side // 8)})},
        "flip": "horizontal",
        "tta": "flip",
    }
    speed = ""
    if time_an_image:  # the recipe's searched values do not change its speed
        fixed = {name: value for name, value in resnet.items() if not isinstance(value, dict)}
        per_image = time_an_image(fixed, (side, side, 3), survey.classes)
        epoch_seconds = trial_epoch_seconds(per_image, trial_images, validation)
        search_seconds = minutes * 60 * SEARCH_SHARE
        epochs = max(1, min(epochs, int(search_seconds / SEARCH_TRIALS // epoch_seconds)))
        trials = search_seconds / (epochs * epoch_seconds)
        speed = (
            f"# Measured here: {per_image * 1000:.3g} ms a training image, ~{epoch_seconds:.0f}"
            f" s an epoch: {trials:.1f} trials of {_epochs(epochs)} fit the search's"
            f" {search_seconds / 60:.3g} min.\n"
        )
    families: dict = {"resnet": resnet}
    if backbone:
        families["transfer"] = {
            "backbone": backbone if backbone.endswith(".keras") else "vgg16",
            **({} if backbone.endswith(".keras") else {"weights": backbone}),
            "dense_units": {"choice": [128, 256]},
            "dropout": {"float": [0.2, 0.6], "step": 0.1},
            "batch_size": min(batch, 64),
            "optimizer": "adam",
            "learning_rate": {"float": [1.0e-4, 3.0e-3], "log": True},
            "early_stopping_patience": 0,
            "flip": "horizontal",
        }
    body = {
        "dataset": source,
        "data": {
            "image_size": [side, side],
            **({"limit": LIMIT} if training > LIMIT else {}),
            **({"image_dir": image_dir} if image_dir else {}),
        },
        "engine": "optuna",
        "sampler": "tpe",
        "pruner": "none",
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "budget": {
            "trials": 20,
            "minutes": minutes,
            "search_share": SEARCH_SHARE,
            "max_epochs": epochs,
        },
        "seed": 0,
        "study": data.unique_name(source),
        "precision": "auto",
        "families": families,
    }
    header = (
        f"# sweeper's default for {source}: {survey.images} images in {survey.classes} "
        f"classes, median shorter side {_median(survey.shorter_sides)} px.\n"
        f"# Trials: {trial_images} training images at {side}x{side}, batch {batch} "
        f"({steps} steps an epoch), {_epochs(epochs)}.\n{speed}"
        "# Copy this file, edit it, and run `sweeper sweep FILE`.\n"
    )
    return header + yaml.safe_dump(body, sort_keys=False, default_flow_style=None)


def _side(shorter_sides: list[int]) -> int:
    """The median shorter side, within `SIDES`, down to a multiple of 8."""
    low, high = SIDES
    return max(low, min(high, _median(shorter_sides)) // 8 * 8)


def _epochs(count: int) -> str:
    return f"{count} epoch{'s' * (count != 1)}"


def _median(values: list[int]) -> int:
    return int(statistics.median(values)) if values else 0


def _batch_size(images: int) -> int:
    """About 40 steps an epoch at least: a power of two from 16 to 256."""
    return max(16, min(256, 2 ** int(math.log2(max(1, images / 40)))))


def _round(value: float) -> float:
    return float(f"{value:.2g}")
