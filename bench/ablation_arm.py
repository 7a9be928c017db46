"""One arm of the ablation: the ResNet recipe with some parameters changed, trained with
sweeper's own `train` on the first LIMIT CIFAR-10 images (seeded 10% held out, as a sweep
trial), scored on the first TEST test images. Prints one JSON line: test accuracy plain,
with flip TTA and with flip+translate TTA, the seconds of each epoch, and the process's CPU
busy share. `"validation": false` in PARAMS trains on the held-out images too, without a
validation pass (as a refit does).

python bench/ablation_arm.py DATA_DIR LIMIT EPOCHS TEST SEED PARAMS_JSON [--precision P]
"""

import argparse
import dataclasses
import hashlib
import json
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
STARTED = time.time()


def cpu_busy() -> float:
    """This process's CPU seconds over its wall seconds and the cores: its busy share."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.time() - STARTED
    return (usage.ru_utime + usage.ru_stime) / (wall * (os.cpu_count() or 1))


def main():
    parser = argparse.ArgumentParser()
    for name, kind in (("data_dir", str), ("limit", int), ("epochs", int), ("test", int)):
        parser.add_argument(name, type=kind)
    parser.add_argument("seed", type=int)
    parser.add_argument("params")
    parser.add_argument("--precision", default="float32")
    args = parser.parse_args()

    import keras
    import numpy as np

    from sweeper import baselines, data, train

    dataset = data.load("cifar10", data_dir=args.data_dir, limit=args.limit, seed=args.seed)
    dataset = dataclasses.replace(
        dataset, x_test=dataset.x_test[: args.test], y_test=dataset.y_test[: args.test]
    )
    params = {**baselines.RESNET_RECIPE, "early_stopping_patience": 0, "tta": "none"}
    params.update(json.loads(args.params))
    if not params.pop("validation", True):  # as a refit trains: no validation pass per epoch
        dataset = dataset.merged()

    class Clock(keras.callbacks.Callback):
        seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    result = train.train(
        "resnet",
        params,
        dataset,
        epochs=args.epochs,
        seed=args.seed,
        precision=args.precision,
        callbacks=[Clock()],
    )

    seen = {hashlib.sha1(dataset.x_test.tobytes()).digest(): result.test_probabilities}

    def predict(x):  # each view once: flip TTA's two views are flip+translate's first two
        key = hashlib.sha1(np.ascontiguousarray(x).tobytes()).digest()
        if key not in seen:
            seen[key] = result.model.predict(x, batch_size=500, verbose=0)
        return seen[key]

    def accuracy(probabilities):
        return float(np.mean(probabilities.argmax(1) == dataset.y_test))

    print(
        json.dumps(
            {
                "test_accuracy": result.test["test_accuracy"],
                "tta_flip": accuracy(train.tta(predict, dataset.x_test, "flip")),
                "tta_flip_translate": accuracy(
                    train.tta(predict, dataset.x_test, "flip+translate")
                ),
                "epoch_seconds": Clock.seconds,
                "cpu_busy": cpu_busy(),
            }
        )
    )


if __name__ == "__main__":
    main()
