"""Multilayer perceptron on flattened pixels (baseline B1)."""

from __future__ import annotations

import keras
from keras import layers

from sweeper.families._layers import dense_head, pixel_input


def build(p: dict, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """`p` holds every parameter of the family (`schema.resolve`)."""
    inputs, x = pixel_input(input_shape, p)
    x = layers.Flatten(name="flatten")(x)
    outputs = dense_head(
        x, n_classes, units=p["units"], n_layers=p["hidden_layers"], dropout=p["dropout"]
    )
    return keras.Model(inputs, outputs, name="mlp")
