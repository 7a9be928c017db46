"""Pieces every family shares: the raw-pixel input with its training-time augmentation, and
the softmax head."""

from __future__ import annotations

import keras
from keras import layers

ALTERNATING = "alternating"


def pixel_input(
    input_shape: tuple[int, ...], p: dict
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Raw uint8 pixels in, scaled to [0, 1], so an exported model needs nothing else; then
    the augmentation `p` asks for (`translate`, `flip`, `cutout`; an alternating flip is the
    input feed's, `train.shuffled_batches`). Keras' augmentation
    layers act in training only: the model predicts on clean pixels."""
    inputs = keras.Input(shape=tuple(input_shape), dtype="uint8", name="pixels")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    height, width = input_shape[:2]
    if p["translate"]:
        x = layers.RandomTranslation(
            p["translate"] / height,
            p["translate"] / width,
            fill_mode="reflect",
            interpolation="nearest",
            name="translate",
        )(x)
    if p["flip"] not in ("none", ALTERNATING):  # alternating: the input feed mirrors
        x = layers.RandomFlip(p["flip"], name="flip")(x)
    if p["cutout"]:
        share = min(1.0, p["cutout"] ** 2 / (height * width))
        x = layers.RandomErasing(scale=(share, share), value_range=(0, 1), name="cutout")(x)
    return inputs, x


def dense_head(
    x: keras.KerasTensor,
    n_classes: int,
    *,
    units: int,
    n_layers: int,
    dropout: float,
    initializer: str = "glorot_uniform",
) -> keras.KerasTensor:
    """Dense layers, dropout, then a float32 softmax (kept float32 under mixed precision)."""
    for i in range(n_layers):
        x = layers.Dense(
            units, activation="relu", kernel_initializer=initializer, name=f"dense_{i + 1}"
        )(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return layers.Dense(n_classes, activation="softmax", dtype="float32", name="classes")(x)
