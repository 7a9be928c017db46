"""CNN with BatchNorm blocks (Conv-BN-ReLU-MaxPool) and augmentation layers (baseline B5).

Augmentation layers act in training only, so the exported model predicts on clean pixels.
"""

from __future__ import annotations

import keras
from keras import layers

from sweeper.families._layers import dense_head, pixel_input


def build(p: dict, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """`p` holds every parameter of the family (`schema.resolve`)."""
    inputs, x = pixel_input(input_shape, p)
    x = _augment(x, p)
    for block in range(p["conv_blocks"]):
        x = layers.Conv2D(
            p["filters"] * 2**block,
            p["kernel_size"],
            padding="same",
            use_bias=False,
            name=f"conv{block + 1}",
        )(x)
        x = layers.BatchNormalization(momentum=p["bn_momentum"], name=f"bn{block + 1}")(x)
        x = layers.ReLU(name=f"relu{block + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = dense_head(x, n_classes, units=p["dense_units"], n_layers=1, dropout=p["dropout"])
    return keras.Model(inputs, outputs, name="cnn_bn")


def _augment(x: keras.KerasTensor, p: dict) -> keras.KerasTensor:
    if p["rotation"]:
        x = layers.RandomRotation(p["rotation"], name="rotation")(x)
    if p["zoom"]:
        x = layers.RandomZoom(p["zoom"], name="zoom")(x)
    if p["contrast"]:
        x = layers.RandomContrast(p["contrast"], name="contrast")(x)
    return x
