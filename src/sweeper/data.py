"""Datasets: Keras' named datasets, image folders and CSV-labelled folders, as uint8 arrays.

Models hold their own preprocessing, so every source yields raw pixels (N, H, W, C) in uint8
and integer labels. A data directory in `shared/data`'s layout is read before Keras' loaders,
and then no network is touched.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sweeper import image_cache
from sweeper.errors import DataError
from sweeper.image_cache import Images

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
DEFAULT_IMAGE_SIZE = (128, 128)
# The default validation split: enough images that one standard error of a validation
# accuracy near 75% is at most 0.5 points (binomial: 0.75 * 0.25 / 0.005**2 = 7,500; higher
# accuracies have smaller errors), within 10-20% of the training images.
VALIDATION_IMAGES = 7500
VALIDATION_SHARES = (0.1, 0.2)
log = logging.getLogger(__name__)


Splits = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class NamedDataset:
    """One named dataset: how Keras downloads it and how its offline copy is laid out.

    `read(folder)` reads `files` from `DATA_DIR/name/` into ((x_train, y_train), (x_test,
    y_test)); `keras_loader` names the `keras.datasets` module that downloads it instead."""

    name: str
    shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    files: tuple[str, ...]
    read: Callable[[Path], Splits]
    keras_loader: str
    mirror_safe: bool = True  # False where a flipped image is no longer of its class


def read_idx_dir(folder: Path) -> Splits:
    """MNIST's layout: four gzipped IDX files, training then test, images then labels."""
    images, labels, test_images, test_labels = (read_idx(folder / f) for f in IDX_FILES)
    return (images, labels), (test_images, test_labels)


def read_npz(folder: Path) -> Splits:
    """One `NAME.npz` with x_train, y_train, x_test and y_test arrays."""
    with np.load(folder / f"{folder.name}.npz") as f:
        return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])


# The registry: adding a named dataset is one entry here.
NAMED = {
    d.name: d
    for d in [
        NamedDataset(
            "mnist",
            (28, 28, 1),
            tuple("0123456789"),
            IDX_FILES,
            read_idx_dir,
            "mnist",
            mirror_safe=False,
        ),
        NamedDataset(
            "fashion_mnist",
            (28, 28, 1),
            (
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
            IDX_FILES,
            read_idx_dir,
            "fashion_mnist",
        ),
        NamedDataset(
            "cifar10",
            (32, 32, 3),
            (
                "airplane",
                "automobile",
                "bird",
                "cat",
                "deer",
                "dog",
                "frog",
                "horse",
                "ship",
                "truck",
            ),
            ("cifar10.npz",),
            read_npz,
            "cifar10",
        ),
    ]
}
SOURCE_PREFIXES = ("folder:", "csv:")


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test splits in uint8, with class names."""

    name: str
    x_train: Images
    y_train: np.ndarray
    x_val: Images
    y_val: np.ndarray
    x_test: Images
    y_test: np.ndarray
    class_names: tuple[str, ...]
    skipped_images: int = 0
    options: dict = field(default_factory=dict)  # how it was loaded, so a run can be redone
    source: str = ""  # where its files are: a folder, a CSV, Keras' download cache
    all_training_images: int | None = None  # before `limit`: what a refit trains on

    @property
    def refit_images(self) -> int:
        """Training and validation images without the limit: a refit's training set."""
        return self.all_training_images or len(self.y_train) + len(self.y_val)

    @property
    def identity(self) -> str:
        """What its experiment and studies are bound to (`identity`)."""
        return identity(self.options.get("data_source", self.name))

    @functools.cached_property
    def digest(self) -> str:
        """A short hash of the training split, read without copying it: the labels, the
        cache rows of images on disk, or up to 1,000 evenly spaced images in memory."""
        digest = hashlib.md5(np.ascontiguousarray(self.y_train).tobytes())
        digest.update(repr(self.x_train.shape).encode())
        if isinstance(self.x_train, image_cache.DiskImages):
            digest.update(str(self.x_train.path).encode() + self.x_train.rows.tobytes())
        else:
            step = max(1, len(self.x_train) // 1000)
            digest.update(np.ascontiguousarray(self.x_train[::step]).tobytes())
        return digest.hexdigest()[:8]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def merged(self) -> Dataset:
        """Training and validation data as one training set, for a refit (no validation)."""
        return replace(
            self,
            x_train=image_cache.concat(self.x_train, self.x_val),
            y_train=np.concatenate([self.y_train, self.y_val]),
            x_val=self.x_val[:0],
            y_val=self.y_val[:0],
        )

    def sample(self, images: int, seed: int) -> Dataset:
        """`images` of its training images, a seeded sample with every class in proportion
        (`stratified`); the other splits as they are, and a refit's images still all."""
        kept = stratified(self.y_train, images, np.random.default_rng(seed))
        return replace(
            self,
            x_train=self.x_train[kept],
            y_train=self.y_train[kept],
            all_training_images=self.refit_images,
        )

    @property
    def sizes(self) -> dict[str, int]:
        return {
            "train_size": len(self.y_train),
            "val_size": len(self.y_val),
            "test_size": len(self.y_test),
        }


def known_names() -> list[str]:
    return [*NAMED, "folder:PATH", "csv:PATH.csv"]


def mirror_safe(name: str) -> bool:
    """Whether flipped images keep their class (not for digits); folders: the user knows."""
    return name not in NAMED or NAMED[name].mirror_safe


def check_name(name: str) -> None:
    """Fails with the list of known datasets when `name` is none of them."""
    if name in NAMED or name.startswith(SOURCE_PREFIXES):
        return
    raise DataError(f"Unknown dataset {name!r}. Known: {', '.join(known_names())}")


def display_name(name: str) -> str:
    """A short name for experiments and run names: `folder:data/fruits` -> `fruits`."""
    if name.startswith(SOURCE_PREFIXES):
        path = Path(name.split(":", 1)[1])
        return path.stem if name.startswith("csv:") else path.name
    return name


def identity(name: str) -> str:
    """What a study is bound to: a named dataset's name; for a folder or a CSV, its kind and
    resolved path (two folders of the same last name are two datasets)."""
    if name.startswith(SOURCE_PREFIXES):
        kind, path = name.split(":", 1)
        return f"{kind}:{Path(path).resolve()}"
    return name


def unique_name(name: str) -> str:
    """A name no other dataset has: a named dataset's; a folder's or CSV's short name and a
    digest of its resolved path (`flowers-3f2a1c`), so two folders called flowers differ."""
    if not name.startswith(SOURCE_PREFIXES):
        return name
    return f"{display_name(name)}-{hashlib.sha256(identity(name).encode()).hexdigest()[:6]}"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    chosen = data_dir or os.environ.get("SWEEPER_DATA_DIR")
    return Path(chosen) if chosen else None


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    image_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Loads a dataset once per process; later calls with the same arguments reuse it.
    The validation split is held out of all the training images (`val_fraction` of them,
    default `validation_size`), then `limit` keeps that many of the rest; both keep every
    class in proportion. `image_dir`: where a `csv:` dataset's relative paths resolve
    (default: the CSV's folder)."""
    check_name(name)
    folder = resolve_data_dir(data_dir)
    if image_dir is not None and not name.startswith("csv:"):
        raise DataError(f"{name}: an image directory is for csv: datasets only")
    return _load_cached(
        name,
        str(folder) if folder else None,
        limit,
        val_fraction,
        seed,
        tuple(image_size),
        str(Path(image_dir).resolve()) if image_dir else None,
    )


@functools.lru_cache(maxsize=4)
def _load_cached(name, data_dir, limit, val_fraction, seed, image_size, image_dir) -> Dataset:
    if name in NAMED:
        (x_train, y_train), (x_test, y_test) = _load_named(name, data_dir)
        class_names, skipped = NAMED[name].class_names, 0
    else:
        x_train, y_train, x_test, y_test, class_names, skipped = _load_images(
            name, image_size, seed, image_dir
        )
    all_training_images = len(y_train)
    x_train, y_train, x_val, y_val = _hold_out(x_train, y_train, val_fraction, seed)
    if limit and limit < len(y_train):
        kept = stratified(y_train, limit, np.random.default_rng(seed + 1))
        x_train, y_train = x_train[kept], y_train[kept]
    options = {
        "data_source": name,
        "data_limit": limit,
        "validation_split": "auto" if val_fraction is None else val_fraction,
        "data_seed": seed,
    }
    if name not in NAMED:
        options["image_size"] = list(image_size)
    if image_dir:
        options["image_dir"] = image_dir
        source = name.split(":", 1)[1]
    elif data_dir:
        source = str(Path(data_dir) / name)
    else:
        source = str(Path.home() / ".keras" / "datasets")
    return Dataset(
        display_name(name),
        x_train,
        y_train,
        x_val,
        y_val,
        x_test,
        y_test,
        tuple(class_names),
        skipped,
        options,
        str(Path(source).resolve()),
        all_training_images,
    )


def validation_size(n: int, fraction: float | None = None) -> int:
    """Images held out for validation of `n` training images: `fraction` of them, or by
    default `VALIDATION_IMAGES` within `VALIDATION_SHARES` of them."""
    if fraction is None:
        low, high = VALIDATION_SHARES
        return max(1, min(max(round(low * n), VALIDATION_IMAGES), round(high * n)))
    return max(1, int(round(n * fraction)))


def stratified(y: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted) of `count` of `y`'s items, every class in proportion: a seeded
    shuffle within each class, then the items earliest in their class's share first."""
    order = rng.permutation(len(y))
    position = np.empty(len(y))
    for label in np.unique(y):
        members = order[y[order] == label]
        position[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.sort(np.argsort(position, kind="stable")[:count])


def _hold_out(x, y, fraction, seed):
    """A seeded, stratified validation split of the training data; the test set stays
    untouched."""
    n_val = validation_size(len(y), fraction)
    if n_val >= len(y):
        what = "the default share" if fraction is None else f"{fraction:.0%}"
        raise DataError(f"Too few training images ({len(y)}) to hold out {what} for validation")
    train, val = _split_indices(y, n_val, seed)
    return x[train], y[train], x[val], y[val]


# --- Keras' named datasets -------------------------------------------------------------


def _load_named(name, data_dir):
    spec = NAMED[name]
    if data_dir is None:
        return _with_channels(_keras_download(spec.keras_loader), spec.shape)
    folder = Path(data_dir) / name
    missing = [f for f in spec.files if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"{name}: missing {', '.join(str(folder / f) for f in missing)} "
            f"(expected {', '.join(spec.files)} in {folder})"
        )
    return _with_channels(spec.read(folder), spec.shape)


def _keras_download(loader_name):
    import keras

    try:
        return getattr(keras.datasets, loader_name).load_data()
    except Exception as error:  # Keras wraps network failures in several types
        if isinstance(error, (KeyboardInterrupt, MemoryError)):
            raise
        name = next(n for n, spec in NAMED.items() if spec.keras_loader == loader_name)
        raise DataError(
            f"{name}: Keras could not download it ({type(error).__name__}: {error}). Without "
            f"a network, put its files ({', '.join(NAMED[name].files)}) in DIR/{name}/ and "
            "give --data-dir DIR or set SWEEPER_DATA_DIR=DIR"
        ) from None


def _with_channels(splits, shape):
    (x_train, y_train), (x_test, y_test) = splits
    reshape = lambda x: x.reshape((len(x), *shape)).astype(np.uint8)  # noqa: E731
    flat = lambda y: np.asarray(y).reshape(-1).astype(np.int64)  # noqa: E731
    return (reshape(x_train), flat(y_train)), (reshape(x_test), flat(y_test))


def read_idx(path: Path) -> np.ndarray:
    """Reads a gzipped IDX file: big-endian magic, one int32 per dimension, then uint8."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (2049, 2051):
        raise DataError(
            f"{path}: not an IDX file of uint8 (magic {magic}, expected 2049 "
            "for labels or 2051 for images)"
        )
    n_dims = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * n_dims).reshape(dims)


# --- Image folders and CSV files ---------------------------------------------------------


@dataclass(frozen=True)
class Survey:
    """A folder's or CSV's images as listed, before any is decoded."""

    images: int
    classes: int
    shorter_sides: list[int]  # of a seeded sample of up to 200 images, from their headers


def survey(name: str, image_dir: str | os.PathLike | None = None) -> Survey:
    """Counts a `folder:` or `csv:` dataset's images and classes and samples their sizes
    (headers only: fast on any folder)."""
    from PIL import Image

    files, _, class_names, _ = _list_source(name, image_dir)
    sample = np.random.default_rng(0).permutation(len(files))[:200]
    sides = []
    for i in sample:
        try:
            with Image.open(files[i]) as img:
                sides.append(min(img.size))
        except (OSError, ValueError, SyntaxError):
            continue
    return Survey(len(files), len(class_names), sides)


def _list_source(name, image_dir=None):
    """Every listed image of a `folder:` or `csv:` dataset, their labels, the class names,
    and where a `Test/` folder's images start in the list (None: no test folder)."""
    kind, path = name.split(":", 1)
    root = Path(path)
    if not root.exists():
        raise DataError(f"{name}: {root} does not exist")
    if kind == "csv":
        return (*_read_label_csv(root, image_dir), None)
    train_dir, test_dir = _train_test_dirs(root)
    class_names = _class_dirs(train_dir, name)
    files, labels = _list_class_files(train_dir, class_names)
    if test_dir is None:
        return files, labels, class_names, None
    test_files, test_labels = _list_class_files(test_dir, class_names)
    return files + test_files, np.concatenate([labels, test_labels]), class_names, len(files)


def _load_images(name, image_size, seed, image_dir=None):
    """A folder's or CSV's images, decoded once into the image cache and read from there,
    with its test split: a `Test/` folder, else a seeded, stratified fifth."""
    files, labels, class_names, test_start = _list_source(name, image_dir)
    if test_start is None:
        train_rows, test_rows = _split_indices(labels, validation_size(len(labels), 0.2), seed)
    else:
        train_rows, test_rows = np.arange(test_start), np.arange(test_start, len(labels))
    _check_files_exist(name, files, image_dir)
    height, width = image_size
    images, readable = image_cache.decoded(files, image_size, lambda f: _decode(f, (width, height)))
    train_rows, test_rows = train_rows[readable[train_rows]], test_rows[readable[test_rows]]
    x_train, y_train = images[train_rows], labels[train_rows]
    x_test, y_test = images[test_rows], labels[test_rows]
    if len(y_train) == 0:
        raise DataError(f"{name}: no readable training images under {name.split(':', 1)[1]}")
    if empty := [c for i, c in enumerate(class_names) if not np.any(y_train == i)]:
        raise DataError(
            f"{name}: no readable training image of class {', '.join(empty)} (each class "
            "needs some; unreadable files are skipped)"
        )
    skipped = int(np.sum(~readable))
    if skipped:
        log.warning(
            "%s: skipped %d unreadable image(s) of %d",
            name,
            skipped,
            len(files),
        )
    return x_train, y_train, x_test, y_test, class_names, skipped


def _train_test_dirs(root):
    """A `Training/` + `Test/` pair (fruits-360) if present, else the root alone."""
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    train = subdirs.get("training") or subdirs.get("train")
    test = subdirs.get("test") or subdirs.get("testing")
    return (train, test) if train and test else (root, None)


def _class_dirs(folder, name):
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not _hidden(p))
    if len(classes) < 2:
        raise DataError(
            f"{name}: expected one subfolder per class (at least 2) in {folder}, "
            f"found {len(classes)}"
        )
    return classes


def _list_class_files(folder, class_names):
    files, labels = [], []
    for label, cls in enumerate(class_names):
        for f in sorted((folder / cls).glob("*")) if (folder / cls).is_dir() else []:
            if f.suffix.lower() in IMAGE_SUFFIXES and not _hidden(f):
                files.append(f)
                labels.append(label)
    return files, np.asarray(labels, dtype=np.int64)


def _hidden(path: Path) -> bool:
    """Dot files and folders: .DS_Store, macOS' ._ twins, .ipynb_checkpoints."""
    return path.name.startswith(".")


def _read_label_csv(csv_path, image_dir=None):
    """Rows of `filename,label`; a header row naming those columns is skipped. Relative
    paths resolve from `image_dir`, else from the CSV's folder."""
    if not csv_path.is_file():
        raise DataError(f"csv:{csv_path}: expected a CSV file of filename,label rows")
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["filename", "label"]:
        rows = rows[1:]
    bad = [i for i, r in enumerate(rows, 1) if len(r) < 2]
    if bad or not rows:
        raise DataError(
            f"csv:{csv_path}: expected rows of filename,label; "
            f"{'empty file' if not rows else f'row {bad[0]} has fewer than 2 columns'}"
        )
    class_names = sorted({r[1].strip() for r in rows})
    index = {c: i for i, c in enumerate(class_names)}
    base = Path(image_dir) if image_dir else csv_path.parent
    files = [base / r[0].strip() for r in rows]
    labels = np.asarray([index[r[1].strip()] for r in rows], dtype=np.int64)
    return files, labels, class_names


def _check_files_exist(name, files, image_dir=None):
    """A CSV that lists files elsewhere is a common mistake: say which and how many."""
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        where = f"from {image_dir}" if image_dir else "from the CSV's own folder, or data.image_dir"
        raise DataError(
            f"{name}: {len(missing)} of {len(files)} listed image(s) not found, the first: "
            f"{missing[0]} (a CSV's relative paths resolve {where})"
        )


def _split_indices(labels, count, seed):
    """The rest and `count` split off, a seeded split with every class in proportion."""
    split = stratified(labels, count, np.random.default_rng(seed))
    return np.setdiff1d(np.arange(len(labels)), split), split


def _decode(path, size) -> np.ndarray | None:
    """A photo as it should look: EXIF orientation applied; grayscale, palette, CMYK and
    16-bit images converted to 8-bit RGB; transparency laid on white. None when it cannot
    be read, or is larger than Pillow's decompression-bomb limit."""
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return np.asarray(_rgb(ImageOps.exif_transpose(img)).resize(size))
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:
        log.debug("skipped %s: %s", path, error)
        return None


def _rgb(img):
    from PIL import Image

    if img.mode.startswith("I"):  # 16- or 32-bit integers: scaled to 8 bits
        values = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 255.0
        img = Image.fromarray(np.clip(values / peak * 255, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("RGB")
