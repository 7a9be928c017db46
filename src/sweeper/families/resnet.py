"""ResNet-9 shape (Page's cifar10-fast, airbench): a stem, then stages of conv-BN-activation
and 2x2 max-pooling, some followed by a residual block of two conv-BN-activation, global
max-pooling and scaled logits. Any input size and channel count: global pooling takes
whatever the stages leave (28x28 digits end at 3x3 after three stages).

BatchNorm momentum 0.9 and logits x0.125 by default: Keras' 0.99 and unscaled logits left a
12-epoch CIFAR-10 run at 0.17 validation accuracy after its first epoch, against 0.49.
airbench's pieces are parameters, each off by default: stage widths, a frozen whitening stem
(`adapt` computes it from the training images before training), identity initialisation,
BatchNorm without a scale and GELU.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from sweeper import schema
from sweeper.families._layers import pixel_input

# Its convolutions at batch 256 keep every core busy in one process: measured on 2 cores, two
# single-threaded workers trained 0.99x the images/s of one two-threaded worker (bench
# `workers`), so `--workers auto` gives a sweep of it one worker with all the threads.
USES_ALL_CORES = True

WHITEN = "whiten"
WHITEN_KERNEL = 2
WHITEN_EPSILON = 5e-4  # airbench's, on pixels in [0, 1]
WHITEN_IMAGES = 2048  # enough patches for a 12x12 covariance; more only costs memory


def build(p: dict, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """`p` holds every parameter of the family (`schema.resolve`)."""
    inputs, x = pixel_input(input_shape, p)
    if p["stem"] == WHITEN:
        channels = input_shape[-1] * WHITEN_KERNEL**2
        x = layers.Conv2D(2 * channels, WHITEN_KERNEL, trainable=False, name=WHITEN)(x)
        x = layers.Activation(p["activation"], name=f"{WHITEN}_{p['activation']}")(x)
    else:
        x = _conv_bn(x, p["width"], p, "stem")
    for stage, width in enumerate(widths(p)):
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
    model = keras.Model(inputs, outputs, name="resnet")
    if p["identity_init"]:
        _identity_init(model)
    return model


def adapt(model: keras.Model, x_train: np.ndarray) -> None:
    """Sets the whitening stem, when the model has one, from the training images' patches:
    its filters are the patch covariance's eigenvectors scaled by 1/sqrt(eigenvalue), and
    their negatives, with biases that centre the patches. It stays frozen."""
    if WHITEN not in {layer.name for layer in model.layers}:
        return
    kernel, bias = whitening(np.asarray(x_train[:WHITEN_IMAGES]))
    model.get_layer(WHITEN).set_weights([kernel, bias])


def whitening(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The whitening stem's kernel (k, k, channels, 2 * k * k * channels) and bias for uint8
    `images` (n, height, width, channels), which the model sees scaled to [0, 1]."""
    x = images.astype("float32") / 255
    k = WHITEN_KERNEL
    # (n, h-1, w-1, c, k, k) -> rows of k*k*c in the kernel's (row, column, channel) order
    patches = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * x.shape[-1])
    mean = patches.mean(axis=0, dtype="float64")
    covariance = np.cov(patches, rowvar=False, dtype="float64")
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    filters = eigenvectors / np.sqrt(eigenvalues + WHITEN_EPSILON)  # one filter a column
    filters = np.concatenate([filters, -filters], axis=1)
    kernel = filters.reshape(k, k, x.shape[-1], -1).astype("float32")
    return kernel, (-mean @ filters).astype("float32")


def widths(p: dict) -> list[int]:
    """Each stage's channels."""
    if p["widths"] == "double":
        return [p["width"] * 2 ** (stage + 1) for stage in range(p["stages"])]
    listed = schema.stage_widths(p["widths"])
    assert listed is not None  # the schema checked it
    return listed


def _identity_init(model: keras.Model) -> None:
    """airbench's dirac init: the first `in` filters of each 3x3 convolution with at least
    as many outputs as inputs pass their input through; the others keep their random start."""
    for layer in model.layers:
        if not isinstance(layer, layers.Conv2D) or layer.name == WHITEN:
            continue
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        size, _, ins, outs = kernel.shape
        if size % 2 == 0 or ins > outs:
            continue
        kernel[:, :, :, :ins] = 0.0
        kernel[size // 2, size // 2, np.arange(ins), np.arange(ins)] = 1.0
        layer.kernel.assign(kernel)


def _conv_bn(x: keras.KerasTensor, width: int, p: dict, name: str) -> keras.KerasTensor:
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(
        momentum=p["bn_momentum"], scale=p["bn_scale"], name=f"{name}_bn"
    )(x)
    return layers.Activation(p["activation"], name=f"{name}_{p['activation']}")(x)


def _has_residual(stage: int, rule: str) -> bool:
    return rule == "all" or (rule == "alternate" and stage % 2 == 0)
