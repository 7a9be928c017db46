"""A frozen `keras.applications` backbone with a dense head (baseline B4).

`weights` is "imagenet" (Keras downloads it), a path to a local weights file for the
backbone without its top, or "none" (random, for tests). `fine_tune` unfreezes the last
layers of the backbone for a second, slow phase of training.
"""

from __future__ import annotations

import keras
from keras import layers

from sweeper.errors import SweeperError
from sweeper.families._layers import dense_head, pixel_input

BACKBONES = {
    "vgg16": "VGG16",
    "vgg19": "VGG19",
    "resnet50": "ResNet50",
    "mobilenet_v2": "MobileNetV2",
}


def build(p: dict, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """`p` holds every parameter of the family (`schema.resolve`)."""
    size = p["input_size"]
    inputs, x = pixel_input(input_shape, p)
    if tuple(input_shape[:2]) != (size, size):
        x = layers.Resizing(size, size, name="resize")(x)
    if input_shape[-1] == 1:  # grey images become three identical channels
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    base = _backbone(p, (size, size, 3))
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


def _backbone(p: dict, input_shape: tuple[int, int, int]) -> keras.Model:
    if p["backbone"] not in BACKBONES:
        raise SweeperError(f"Unknown backbone {p['backbone']!r}. Known: {', '.join(BACKBONES)}")
    weights = None if p["weights"] in (None, "none") else p["weights"]
    factory = getattr(keras.applications, BACKBONES[p["backbone"]])
    return factory(include_top=False, weights=weights, input_shape=input_shape)
