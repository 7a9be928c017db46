"""Every parameter a trial reads, once: its type, default, allowed values and what it does.

Training parameters apply to every family; each family adds its own. Config validation, the
search space, baseline points, `sweeper params` and the family builders all read this module,
and `resolve` is the one place where defaults are merged. No Keras here: the sweep file is
checked before TensorFlow loads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any

from sweeper.errors import SweeperError

KERNEL_INITIALIZERS = (
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
)


@dataclass(frozen=True)
class Param:
    """One parameter. `low`/`high` bound numbers (inclusive unless `low_open`); `choices`
    lists the allowed values of a name."""

    name: str
    type: type
    default: Any
    doc: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    or_suffix: str | None = None  # a text ending so is allowed beside `choices` (a path)
    pattern: Callable[[Any], bool] | None = None  # a text that this accepts is allowed too
    pattern_doc: str = ""

    def problem(self, value: Any) -> str | None:
        """What `value` should have been, or None when it is allowed."""
        if not self.accepts_type(value):
            return f"a value of type {self.type.__name__}"
        a_path = self.or_suffix is not None and str(value).endswith(self.or_suffix)
        patterned = self.pattern is not None and self.pattern(value)
        if self.choices is not None and value not in self.choices and not (a_path or patterned):
            path = f" or a path ending in {self.or_suffix}" if self.or_suffix else ""
            pattern = f" or {self.pattern_doc}" if self.pattern else ""
            return f"one of {', '.join(map(str, self.choices))}{path}{pattern}"
        if self.type in (int, float) and not math.isfinite(value):
            return "a finite number"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"a number {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None and value > self.high:
            return f"a number <= {self.high:g}"
        return None

    def accepts_type(self, value: Any) -> bool:
        """An int parameter takes no 0.5 and no True; a float takes ints too."""
        if isinstance(value, bool):
            return self.type is bool
        if self.type is float:
            return isinstance(value, (int, float))
        return isinstance(value, self.type)

    def allowed(self) -> str:
        """The allowed values in words, for listings."""
        if self.choices is not None:
            return ", ".join(map(str, self.choices))
        if self.low is None and self.high is None:
            return "any"
        low = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = "" if self.high is None else f"<= {self.high:g}"
        return " and ".join(part for part in (low, high) if part)


def _params(*params: Param) -> dict[str, Param]:
    return {p.name: p for p in params}


def _fraction(name: str, default: float, doc: str) -> Param:
    return Param(name, float, default, doc, low=0.0, high=0.95)


def _count(name: str, default: int, doc: str, low: int = 1, high: int = 8192) -> Param:
    return Param(name, int, default, doc, low=low, high=high)


TRAINING = _params(
    _count("batch_size", 128, "images per training step", high=65536),
    Param(
        "optimizer",
        str,
        "adam",
        "the Keras optimizer",
        choices=("adam", "adamax", "nadam", "rmsprop", "sgd", "adamw"),
    ),
    Param("learning_rate", float, 1e-3, "initial learning rate", low=0.0, low_open=True),
    Param(
        "lr_schedule",
        str,
        "constant",
        "constant; exponential: ExponentialDecay(learning_rate, decay_steps, decay_rate); "
        "cosine: warmup to learning_rate over warmup_fraction of the trial's steps, then "
        "cosine decay to final_lr_fraction of it by the trial's last step",
        choices=("constant", "exponential", "cosine"),
    ),
    Param(
        "warmup_fraction",
        float,
        0.0,
        "share of the steps spent warming up (cosine)",
        low=0.0,
        high=0.5,
    ),
    Param(
        "final_lr_fraction",
        float,
        0.0,
        "learning rate at the end, as a share of the peak (cosine)",
        low=0.0,
        high=1.0,
    ),
    _count("decay_steps", 1000, "steps per decay_rate factor (exponential schedule)", high=10**9),
    Param(
        "decay_rate",
        float,
        0.9,
        "factor per decay_steps (exponential schedule)",
        low=0.0,
        high=1.0,
        low_open=True,
    ),
    Param("momentum", float, 0.9, "momentum of sgd and rmsprop", low=0.0, high=0.999),
    Param("nesterov", bool, False, "Nesterov momentum (sgd)"),
    Param(
        "weight_decay",
        float,
        0.0,
        "decoupled weight decay of the optimizer (AdamW-style)",
        low=0.0,
        high=0.1,
    ),
    Param(
        "lr_weight_decay",
        float,
        0.0,
        "learning_rate x weight_decay: the share of each weight that Keras' decoupled decay "
        "removes per step at the peak learning rate. Above 0 it sets weight_decay to "
        "lr_weight_decay / learning_rate, so a space over learning_rate and this moves the "
        "step size at an unchanged decay per step (the two are coupled); 0: weight_decay "
        "as given",
        low=0.0,
        high=0.01,
    ),
    Param(
        "ema_momentum",
        float,
        0.0,
        "weight averaging: the model keeps an exponential moving average of its weights "
        "with this momentum (Keras' use_ema), evaluated and saved at the end; 0: off (short "
        "runs lose by it: README, ablation)",
        low=0.0,
        high=0.9999,
    ),
    Param(
        "label_smoothing",
        float,
        0.0,
        "share of each target spread over all classes",
        low=0.0,
        high=0.5,
    ),
    _count(
        "translate",
        0,
        "random shift in training, up to this many pixels (reflected "
        "edges): the pad-and-crop of fast CIFAR recipes",
        low=0,
        high=32,
    ),
    Param(
        "flip",
        str,
        "none",
        "flips in training; none for digits. alternating: each image mirrored every other "
        "epoch (a random half in the first), not at random (airbench)",
        choices=("none", "horizontal", "vertical", "horizontal_and_vertical", "alternating"),
    ),
    _count(
        "cutout",
        0,
        "side in pixels of a square erased at random in training; 0: off",
        low=0,
        high=64,
    ),
    Param(
        "tta",
        str,
        "none",
        "test-time augmentation, logged as test_accuracy_tta (selection stays on validation): "
        "flip averages each test image with its mirror; flip+translate adds both "
        "shifted by one pixel (reflected edges) up-left and down-right, at half the weight",
        choices=("none", "flip", "flip+translate"),
    ),
    Param(
        "loss",
        str,
        "crossentropy",
        "crossentropy, or mse on one-hot targets (baseline B6)",
        choices=("crossentropy", "mse"),
    ),
    _count(
        "early_stopping_patience",
        3,
        "epochs without improvement before stopping; 0: off",
        low=0,
        high=1000,
    ),
    Param(
        "early_stopping_monitor",
        str,
        "val_loss",
        "what early stopping watches",
        choices=("val_loss", "val_accuracy", "loss", "accuracy"),
    ),
)

# Keras' 0.99 lags in short schedules: a cnn_bn trial of 3 epochs on 18,000 fashion_mnist
# images validated at 13% with it and at 86% with 0.9, from the same training (2026-12-02).
BN_MOMENTUM = Param(
    "bn_momentum",
    float,
    0.9,
    "BatchNorm momentum; Keras' 0.99 lags in short schedules",
    low=0.0,
    high=0.999,
)
FAMILIES: dict[str, tuple[str, dict[str, Param]]] = {
    "mlp": (
        "Dense layers on flattened pixels (baseline B1)",
        _params(
            _count("hidden_layers", 2, "dense hidden layers", low=0, high=16),
            _count("units", 128, "units per hidden layer"),
            _fraction("dropout", 0.25, "dropout before the classifier"),
        ),
    ),
    "cnn": (
        "Conv2D + MaxPool blocks, filters doubling per block (B2, B3, B6)",
        _params(
            _count("conv_blocks", 2, "blocks, each ending in 2x2 max-pooling", high=8),
            _count("filters", 32, "filters of the first block", high=2048),
            _count("convs_per_block", 1, "convolutions per block", high=8),
            _count("kernel_size", 3, "convolution kernel size", high=15),
            _count("dense_layers", 1, "dense layers before the classifier", low=0, high=8),
            _count("dense_units", 100, "units per dense layer"),
            _fraction("dropout", 0.2, "dropout before the classifier"),
            Param(
                "kernel_initializer",
                str,
                "glorot_uniform",
                "weight initializer",
                choices=KERNEL_INITIALIZERS,
            ),
        ),
    ),
    "cnn_bn": (
        "Conv-BN-ReLU-MaxPool blocks with augmentation layers (baseline B5)",
        _params(
            _count("conv_blocks", 2, "blocks, each ending in 2x2 max-pooling", high=8),
            _count("filters", 32, "filters of the first block", high=2048),
            _count("kernel_size", 3, "convolution kernel size", high=15),
            _count("dense_units", 128, "units of the dense layer"),
            _fraction("dropout", 0.3, "dropout before the classifier"),
            replace(TRAINING["flip"], default="horizontal"),  # B5 flips
            Param(
                "rotation",
                float,
                0.05,
                "random rotation, as a fraction of a full turn",
                low=0.0,
                high=1.0,
            ),
            _fraction("zoom", 0.1, "random zoom, as a fraction of the size"),
            Param("contrast", float, 0.1, "random contrast factor", low=0.0, high=1.0),
            BN_MOMENTUM,
        ),
    ),
    "resnet": (
        "ResNet-9 shape: conv-BN-ReLU stem, stages of conv-BN-ReLU + max-pool (some with a "
        "residual block), global pooling, scaled logits",
        _params(
            _count("width", 32, "channels of the stem; each stage doubles them", low=4, high=512),
            _count("stages", 3, "stages, each halving the image", high=5),
            Param(
                "widths",
                str,
                "double",
                "channels of each stage: double (the stem's width, doubled at each stage) or "
                "one number a stage, such as 64/256/256 (then it sets the number of stages)",
                choices=("double",),
                pattern=lambda v: stage_widths(v) is not None,
                pattern_doc="widths such as 64/128/128",
            ),
            Param(
                "stem",
                str,
                "conv",
                "first layer: conv (3x3 conv-BN-ReLU of `width` channels), or whiten: a "
                "frozen 2x2 convolution that whitens the training images' patches, computed "
                "from them before training (airbench)",
                choices=("conv", "whiten"),
            ),
            Param(
                "identity_init",
                bool,
                False,
                "start each 3x3 convolution as the identity on its input channels (dirac), "
                "the rest random",
            ),
            Param(
                "bn_scale",
                bool,
                True,
                "BatchNorm learns a scale (gamma); airbench drops it",
            ),
            Param(
                "activation",
                str,
                "relu",
                "activation after each BatchNorm",
                choices=("relu", "gelu"),
            ),
            Param(
                "residual",
                str,
                "alternate",
                "stages with a residual block of two "
                "conv-BN-ReLU: alternate (1st, 3rd, ...), all or none",
                choices=("alternate", "all", "none"),
            ),
            BN_MOMENTUM,
            Param(
                "logit_scale",
                float,
                0.125,
                "factor on the logits before the softmax",
                low=0.0,
                high=1.0,
                low_open=True,
            ),
            _fraction("dropout", 0.0, "dropout before the classifier"),
        ),
    ),
    "transfer": (
        "A frozen keras.applications backbone with a dense head (baseline B4)",
        _params(
            Param(
                "backbone",
                str,
                "vgg16",
                "a keras.applications model, or a .keras file of your own (sweeper best "
                "--export), cut before its classifier; input_size and weights are then unused",
                choices=("vgg16", "vgg19", "resnet50", "mobilenet_v2"),
                or_suffix=".keras",
            ),
            Param(
                "weights",
                str,
                "imagenet",
                "imagenet (downloaded), a local weights file without the top, or none",
            ),
            _count(
                "input_size", 96, "side of the square the images are resized to", low=32, high=1024
            ),
            _count("dense_units", 519, "units of the dense layer"),
            _fraction("dropout", 0.5, "dropout before the classifier"),
            _count(
                "fine_tune_layers", 4, "backbone layers unfrozen for fine-tuning", low=0, high=1000
            ),
            _count(
                "fine_tune_epochs", 0, "epochs of the fine-tuning phase; 0: none", low=0, high=1000
            ),
            Param(
                "fine_tune_learning_rate",
                float,
                1e-5,
                "learning rate of fine-tuning",
                low=0.0,
                low_open=True,
            ),
        ),
    ),
}


def stage_widths(text: Any) -> list[int] | None:
    """`64/256/256` as [64, 256, 256]; None when `text` is no such list."""
    parts = str(text).split("/")
    if not all(part.isdigit() and 1 <= int(part) <= 4096 for part in parts) or len(parts) > 5:
        return None
    return [int(part) for part in parts]


def family_names() -> list[str]:
    return list(FAMILIES)


def params_of(family: str) -> dict[str, Param]:
    """Every parameter a trial of `family` reads: training ones, then the family's."""
    if family not in FAMILIES:
        raise SweeperError(f"Unknown family {family!r}. Known: {', '.join(FAMILIES)}")
    return {**TRAINING, **FAMILIES[family][1]}


def defaults(family: str) -> dict[str, Any]:
    return {name: p.default for name, p in params_of(family).items()}


def resolve(family: str, values: dict[str, Any]) -> dict[str, Any]:
    """The family's defaults overlaid with `values`: the complete parameters of a trial.
    Raises `SweeperError` on an unknown name or a value the parameter does not allow."""
    known = params_of(family)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SweeperError(
            f"Unknown parameter(s) for family {family}: {', '.join(unknown)}. "
            f"Known: {', '.join(known)}"
        )
    for name, value in values.items():
        if expected := known[name].problem(value):
            raise SweeperError(f"{family}.{name}: expected {expected}. Received: {value!r}")
    full = {**defaults(family), **values}
    if full["lr_weight_decay"]:
        derived = full["lr_weight_decay"] / full["learning_rate"]
        # a logged run gives both back; only a weight_decay that disagrees is refused
        if "weight_decay" in values and not math.isclose(values["weight_decay"], derived):
            raise SweeperError(
                f"{family}: weight_decay or lr_weight_decay (weight_decay x learning_rate), "
                "not both"
            )
        full["weight_decay"] = derived
    return full


def in_terms_of(names: Collection[str], values: dict[str, Any]) -> dict[str, Any]:
    """`values` (a recipe) in the parameters `names` (a space) searches: its weight_decay
    as lr_weight_decay, times its learning rate, where the space searches the product."""
    if "lr_weight_decay" not in names or "lr_weight_decay" in values:
        return values
    full = {**{name: p.default for name, p in TRAINING.items()}, **values}
    product = float(f"{full['weight_decay'] * full['learning_rate']:.10g}")
    rest = {name: value for name, value in values.items() if name != "weight_decay"}
    return {**rest, "lr_weight_decay": product}


def from_text(family: str, name: str, text: str) -> Any:
    """A parameter's value from its logged text form (MLflow keeps params as strings)."""
    kind = params_of(family)[name].type
    if kind is bool:
        return text == "True"
    return kind(text)
