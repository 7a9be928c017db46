"""A frozen backbone with a dense head (baseline B4), then an optional fine-tune.

The backbone is a `keras.applications` model, whose `weights` are "imagenet" (Keras
downloads them), a local weights file without the top, or "none" (random, for tests); or a
`.keras` file of a model of your own (`sweeper best --export`), cut before its classifier:
how a pretrained backbone works where ImageNet weights cannot be downloaded. `fine_tune`
unfreezes the last layers of the backbone for a second, slow phase of training.
"""

from __future__ import annotations

import keras
from keras import layers

from sweeper.errors import SweeperError
from sweeper.families._layers import dense_head, pixel_input

# ImageNet-sized convolutions use every core in one process, like `resnet`'s (not measured
# here), and one copy of VGG16 at 224x224 per core would not fit most machines' memory.
USES_ALL_CORES = True

BACKBONES = {
    "vgg16": "VGG16",
    "vgg19": "VGG19",
    "resnet50": "ResNet50",
    "mobilenet_v2": "MobileNetV2",
}


def build(p: dict, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """`p` holds every parameter of the family (`schema.resolve`)."""
    inputs, x = pixel_input(input_shape, p)
    if p["backbone"].endswith(".keras"):
        base = own_backbone(p["backbone"])
    else:
        base = _backbone(p, (p["input_size"], p["input_size"], 3))
    height, width, channels = base.input_shape[1:]
    if tuple(input_shape[:2]) != (height, width):
        x = layers.Resizing(height, width, name="resize")(x)
    if input_shape[-1] == 1 and channels == 3:  # grey images as three identical channels
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    elif input_shape[-1] != channels:
        raise SweeperError(
            f"The backbone takes {channels}-channel images; these have {input_shape[-1]}"
        )
    base.trainable = False
    x = layers.Flatten(name="flatten")(base(x, training=False))
    outputs = dense_head(x, n_classes, units=p["dense_units"], n_layers=1, dropout=p["dropout"])
    return keras.Model(inputs, outputs, name="transfer")


def fine_tune(model: keras.Model, p: dict) -> None:
    """Unfreezes the backbone's last `fine_tune_layers` layers (BatchNorm stays frozen)."""
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    base.trainable = True
    cut = len(base.layers) - p["fine_tune_layers"]
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= cut and not isinstance(layer, layers.BatchNormalization)


def own_backbone(path: str) -> keras.Model:
    """A sweeper model from a `.keras` file, from its scaled pixels (after its `rescale`
    layer, so its own augmentation stays out) to the features its classifier reads."""
    try:
        source = keras.models.load_model(path, safe_mode=True)
    except (OSError, ValueError) as error:
        raise SweeperError(f"Cannot load the backbone {path}: {error}") from None
    dense = [layer for layer in source.layers if isinstance(layer, layers.Dense)]
    if not dense or "rescale" not in {layer.name for layer in source.layers}:
        raise SweeperError(f"{path} is not a sweeper model (raw pixels, rescale, classifier)")
    start = source.get_layer("rescale").output
    return keras.Model(start, dense[-1].input, name="backbone")


def _backbone(p: dict, input_shape: tuple[int, int, int]) -> keras.Model:
    if p["backbone"] not in BACKBONES:
        raise SweeperError(f"Unknown backbone {p['backbone']!r}. Known: {', '.join(BACKBONES)}")
    weights = None if p["weights"] in (None, "none") else p["weights"]
    factory = getattr(keras.applications, BACKBONES[p["backbone"]])
    try:
        return factory(include_top=False, weights=weights, input_shape=input_shape)
    except Exception as error:
        if weights != "imagenet" or isinstance(error, (KeyboardInterrupt, MemoryError)):
            raise
        raise SweeperError(
            f"could not download the ImageNet weights of {p['backbone']} ({error}); without "
            "a network give weights: PATH.weights.h5 (a local copy) or weights: none"
        ) from None
