"""Image folders made from CIFAR-10: two tasks for transfer, or one folder of "photos".

    python examples/cifar_folders.py data [--data-dir ../shared/data] [--few 100]
    python examples/cifar_folders.py data --photos 200 --size 96

writes `data/cifar_a` (airplane, automobile, bird, cat, deer: all 25,000 training images and
the 5,000 test images of those classes) and `data/cifar_b` (dog, frog, horse, ship, truck:
only `--few` training images per class, and all 5,000 test images), each as `Training/` and
`Test/` folders of PNG files, one subfolder per class. A model trained on cifar_a never sees
a cifar_b class, so its features on cifar_b are a real transfer. Without `--data-dir` (or
SWEEPER_DATA_DIR), Keras downloads CIFAR-10.

With `--photos N`, writes instead `data/cifar10_photos`: the first N training images of each
of the ten classes in one folder, one subfolder per class (no test folder: sweeper keeps a
stratified share for testing), resized to `--size` pixels a side, as a folder of a user's
own photos would come: `sweeper sweep folder:data/cifar10_photos`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TASKS = {"cifar_a": range(0, 5), "cifar_b": range(5, 10)}


Split = tuple[np.ndarray, np.ndarray]


def load(data_dir: str | None) -> tuple[Split, Split]:
    if data_dir:
        with np.load(Path(data_dir) / "cifar10" / "cifar10.npz") as f:
            return (f["x_train"], f["y_train"].ravel()), (f["x_test"], f["y_test"].ravel())
    import keras

    (x, y), (xt, yt) = keras.datasets.cifar10.load_data()
    return (x, y.ravel()), (xt, yt.ravel())


def write(
    folder: Path,
    images: np.ndarray,
    labels: np.ndarray,
    classes: range,
    per_class: int | None,
    size: int = 32,
) -> None:
    for label in classes:
        (folder / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        chosen = np.flatnonzero(labels == label)[:per_class]
        for i in chosen:
            image = Image.fromarray(images[i])
            if size != image.width:
                image = image.resize((size, size), Image.Resampling.BICUBIC)
            image.save(folder / CLASSES[label] / f"{i}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data-dir", default=os.environ.get("SWEEPER_DATA_DIR"))
    parser.add_argument("--few", type=int, default=100, help="training images per cifar_b class")
    parser.add_argument("--photos", type=int, help="instead: one folder, N images per class")
    parser.add_argument("--size", type=int, default=32, help="side of the written images")
    args = parser.parse_args()
    (x, y), (xt, yt) = load(args.data_dir)
    if args.photos:
        write(args.out / "cifar10_photos", x, y, range(10), args.photos, args.size)
        print(f"{args.out / 'cifar10_photos'}: {args.photos} images a class, {args.size}px")
        return
    for task, classes in TASKS.items():
        few = args.few if task == "cifar_b" else None
        write(args.out / task / "Training", x, y, classes, few, args.size)
        write(args.out / task / "Test", xt, yt, classes, None, args.size)
        print(f"{args.out / task}: {', '.join(CLASSES[c] for c in classes)}")


if __name__ == "__main__":
    main()
