"""Pieces every family shares: the raw-pixel input and the softmax head."""

from __future__ import annotations

import keras
from keras import layers


def pixel_input(input_shape: tuple[int, ...]) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Raw uint8 pixels in, scaled to [0, 1], so an exported model needs nothing else."""
    inputs = keras.Input(shape=tuple(input_shape), dtype="uint8", name="pixels")
    return inputs, layers.Rescaling(1.0 / 255, name="rescale")(inputs)


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
