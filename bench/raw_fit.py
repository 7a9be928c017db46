"""The reference: a plain Keras script, no sweeper, no MLflow: build, fit, predict the test
set, save the model. Prints one JSON line.

python bench/raw_fit.py DATA_DIR DATASET LIMIT EPOCHS BATCH [--precision P] [--threads N]
    [--jit] [--arch cnn-mnist|cnn-cifar10]
"""

import argparse
import gzip
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def read_idx(path):
    import numpy as np

    with gzip.open(path) as f:
        raw = f.read()
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def load(data_dir, name):
    import numpy as np

    if name == "cifar10":
        with np.load(f"{data_dir}/cifar10/cifar10.npz") as f:
            return f["x_train"], f["y_train"].reshape(-1), f["x_test"], f["y_test"].reshape(-1)
    d = f"{data_dir}/{name}"
    return (
        read_idx(f"{d}/train-images-idx3-ubyte.gz")[..., None],
        read_idx(f"{d}/train-labels-idx1-ubyte.gz"),
        read_idx(f"{d}/t10k-images-idx3-ubyte.gz")[..., None],
        read_idx(f"{d}/t10k-labels-idx1-ubyte.gz"),
    )


def model_for(arch, shape):
    import keras
    from keras import layers

    init = "he_uniform" if arch == "cnn-mnist" else "glorot_uniform"
    inputs = keras.Input(shape, dtype="uint8")
    x = layers.Rescaling(1 / 255)(inputs)
    for filters in [32] if arch == "cnn-mnist" else [32, 64]:
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer=init)(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(100, activation="relu", kernel_initializer=init)(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(10, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


class FirstStep:
    def __init__(self):
        import keras

        class Callback(keras.callbacks.Callback):
            first = None
            epoch_seconds = []

            def on_train_batch_begin(self, batch, logs=None):
                if Callback.first is None:
                    Callback.first = time.time()

            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                Callback.epoch_seconds.append(time.perf_counter() - self._t)

        self.callback = Callback()


def main():
    parser = argparse.ArgumentParser()
    for name in ("data_dir", "dataset"):
        parser.add_argument(name)
    for name in ("limit", "epochs", "batch"):
        parser.add_argument(name, type=int)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--inter-threads", type=int)
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--arch", default="cnn-mnist")
    args = parser.parse_args()
    import keras
    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(args.threads, 2))
    if args.inter_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_threads)
    keras.mixed_precision.set_global_policy(args.precision)
    keras.utils.set_random_seed(0)
    x, y, x_test, y_test = load(args.data_dir, args.dataset)
    x, y = x[: args.limit], y[: args.limit]
    n_val = len(y) // 10
    x_val, y_val, x, y = x[:n_val], y[:n_val], x[n_val:], y[n_val:]
    trial_start, trial_started = time.perf_counter(), time.time()
    model = model_for(args.arch, x.shape[1:])
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=args.jit,
    )
    probe = FirstStep()
    start = time.perf_counter()
    history = model.fit(
        x,
        y,
        validation_data=(x_val, y_val),
        epochs=args.epochs,
        batch_size=args.batch,
        callbacks=[probe.callback],
        verbose=0,
    )
    fit_seconds = time.perf_counter() - start
    test_accuracy = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test))
    with tempfile.TemporaryDirectory() as folder:
        model.save(f"{folder}/model.keras")
        trial_seconds = time.perf_counter() - trial_start
    steady = probe.callback.epoch_seconds[1:] or probe.callback.epoch_seconds
    print(
        json.dumps(
            {
                "first_step": probe.callback.first,
                "trial_started": trial_started,
                "fit_seconds": fit_seconds,
                "trial_seconds": trial_seconds,
                "epoch_seconds": probe.callback.epoch_seconds,
                "images_per_second": len(y) * args.epochs / fit_seconds,
                "steady_images_per_second": len(y) * len(steady) / sum(steady),
                "val_accuracy": float(history.history["val_accuracy"][-1]),
                "test_accuracy": test_accuracy,
                "train_images": len(y),
            }
        )
    )


if __name__ == "__main__":
    main()
