"""ResNet-9 shape (Page's cifar10-fast, airbench): a conv-BN-ReLU stem, then stages of
conv-BN-ReLU and 2x2 max-pooling, some followed by a residual block of two conv-BN-ReLU,
global max-pooling and scaled logits. Any input size and channel count: global pooling
takes whatever the stages leave (28x28 digits end at 3x3 after three stages).

BatchNorm momentum 0.9 and logits x0.125 by default: Keras' 0.99 and unscaled logits left a
12-epoch CIFAR-10 run at 0.17 validation accuracy after its first epoch, against 0.49.
"""

from __future__ import annotations

import keras
from keras import layers

from sweeper.families._layers import pixel_input

# Its convolutions at batch 256 keep every core busy in one process: measured on 2 cores, two
# single-threaded workers trained 0.99x the images/s of one two-threaded worker (bench
# `workers`), so `--workers auto` gives a sweep of it one worker with all the threads.
USES_ALL_CORES = True


def build(p: dict, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """`p` holds every parameter of the family (`schema.resolve`)."""
    inputs, x = pixel_input(input_shape, p)
    x = _conv_bn(x, p["width"], p, "stem")
    for stage in range(p["stages"]):
        width = p["width"] * 2 ** (stage + 1)
        x = _conv_bn(x, width, p, f"stage{stage + 1}")
        x = layers.MaxPooling2D(2, padding="same", name=f"stage{stage + 1}_pool")(x)
        if _has_residual(stage, p["residual"]):
            shortcut = x
            x = _conv_bn(x, width, p, f"stage{stage + 1}_res1")
            x = _conv_bn(x, width, p, f"stage{stage + 1}_res2")
            x = layers.Add(name=f"stage{stage + 1}_add")([shortcut, x])
    x = layers.GlobalMaxPooling2D(name="global_pool")(x)
    if p["dropout"]:
        x = layers.Dropout(p["dropout"], name="dropout")(x)
    x = layers.Dense(n_classes, use_bias=False, name="logits")(x)
    x = layers.Rescaling(p["logit_scale"], name="logit_scale")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="classes")(x)
    return keras.Model(inputs, outputs, name="resnet")


def _conv_bn(x: keras.KerasTensor, width: int, p: dict, name: str) -> keras.KerasTensor:
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=p["bn_momentum"], name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _has_residual(stage: int, rule: str) -> bool:
    return rule == "all" or (rule == "alternate" and stage % 2 == 0)
