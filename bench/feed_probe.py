"""Refit-like epochs of fashion_mnist's ResNet recipe (its loss, smoothed targets), fed by
Keras' array adapter (tf.data autotune on) or by `train.shuffled_batches` (autotune off),
fits in the order given, in one process; per epoch its seconds, the cores busy
(/proc/stat), the seconds before its first batch (where Keras drops the epoch before's
iterator) and the rest. Why refit epochs ran at two speeds (docs/measurements.md).

python bench/feed_probe.py arrays dataset arrays dataset [--data-dir DIR] [--images N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import keras

from sweeper import config, data, devices, families, policy, schema, train
from sweeper.sweep import _fixed

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4


def cpu_ticks() -> tuple[int, int]:
    """(all ticks, idle + iowait ticks) of the machine so far."""
    with open("/proc/stat") as stat:
        ticks = list(map(int, stat.readline().split()[1:]))
    return sum(ticks), ticks[3] + ticks[4]


class CoresBusy(keras.callbacks.Callback):
    """Prints each epoch's seconds, how many cores were busy on average, and how long its
    first batch waited."""

    def __init__(self, arm: str):
        super().__init__()
        self.arm = arm

    def on_epoch_begin(self, epoch, logs=None):
        self.started, self.ticks = time.perf_counter(), cpu_ticks()
        self.first_batch = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.first_batch is None:
            self.first_batch = time.perf_counter() - self.started

    def on_epoch_end(self, epoch, logs=None):
        total, idle = (now - then for now, then in zip(cpu_ticks(), self.ticks, strict=True))
        busy = os.cpu_count() * (total - idle) / max(total, 1)
        seconds = time.perf_counter() - self.started
        print(
            f"{self.arm} epoch {epoch} {seconds:.1f}s busy {busy:.2f} cores, "
            f"first batch after {self.first_batch:.1f}s, "
            f"the rest {seconds - self.first_batch:.1f}s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("arms", nargs="+", choices=("arrays", "dataset"))
    parser.add_argument(
        "--data-dir", default=os.environ.get("SWEEPER_DATA_DIR", ROOT.parent / "shared" / "data")
    )
    parser.add_argument("--images", type=int, default=30_000)
    args = parser.parse_args()
    spec = config.load(ROOT / "sweeps" / "fashion_mnist.yaml")
    family, point = policy.first_points(spec)[0]
    params = schema.resolve(family, {**_fixed(spec.families[family]), **point})
    keras.mixed_precision.set_global_policy(devices.precision("auto"))
    dataset = data.load("fashion_mnist", data_dir=args.data_dir)
    x = dataset.x_train[: args.images]
    y = train._targets(params, dataset.y_train[: args.images], dataset.n_classes)  # smoothed
    for arm in args.arms:
        keras.utils.set_random_seed(0)
        model = families.get(family).build(params, dataset.input_shape, dataset.n_classes)
        model.compile(
            optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
            loss=train._loss(params),
            metrics=["accuracy"],
        )
        fed = (
            {"x": x, "y": y, "batch_size": params["batch_size"]}
            if arm == "arrays"
            else train._inputs(params, x, y, EPOCHS, 0)  # what a refit is fed
        )
        model.fit(**fed, epochs=EPOCHS, verbose=0, callbacks=[CoresBusy(arm)])


if __name__ == "__main__":
    main()
