"""Plain CNN: blocks of Conv2D + MaxPool, filters doubling per block (baselines B2, B3, B6)."""

from __future__ import annotations

import keras
from keras import layers

from sweeper.families._layers import dense_head, pixel_input


def build(p: dict, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """`p` holds every parameter of the family (`schema.resolve`)."""
    init = p["kernel_initializer"]
    inputs, x = pixel_input(input_shape, p)
    for block in range(p["conv_blocks"]):
        filters = p["filters"] * 2**block
        for conv in range(p["convs_per_block"]):
            x = layers.Conv2D(
                filters,
                p["kernel_size"],
                padding="same",
                activation="relu",
                kernel_initializer=init,
                name=f"conv{block + 1}_{conv + 1}",
            )(x)
        x = layers.MaxPooling2D(2, name=f"pool{block + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = dense_head(
        x,
        n_classes,
        units=p["dense_units"],
        n_layers=p["dense_layers"],
        dropout=p["dropout"],
        initializer=init,
    )
    return keras.Model(inputs, outputs, name="cnn")
