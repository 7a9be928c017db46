"""The decoded images of folders and CSVs: one uint8 file on disk, read a batch at a time.

A folder's images are decoded once, on every core, into one `.npy` file per listing and
image size under `cache_dir()`, and later trials and sweeps read that file. The key hashes
each file's path, size and modification time, so a changed folder is another key and is
read again. Training reads the rows it needs with `pread` rather than a memory map: the
pages stay the kernel's cache, not this process's resident memory, so a folder larger
than memory trains in a few hundred megabytes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CACHE_ENV = "SWEEPER_CACHE_DIR"
IMAGES = "images.npy"
READABLE = "readable.npy"
DECODE_CHUNK = 512  # images decoded ahead of the write: bounds the memory decoding takes


def cache_dir() -> Path:
    """Where decoded images live: `$SWEEPER_CACHE_DIR/images`, by default
    `~/.cache/sweeper/images`. Deleting it is safe: the next run decodes again."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sweeper"
    return Path(root) / "images"


def key(files: Sequence[Path], image_size: tuple[int, int]) -> str:
    """A digest of the listing (each file's resolved path, size and modification time, in
    order) and the image size: what the decoded file depends on."""
    digest = hashlib.sha256(json.dumps(list(image_size)).encode())
    for f in files:
        stat = os.stat(f)
        digest.update(f"{Path(f).resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def decoded(
    files: Sequence[Path],
    image_size: tuple[int, int],
    decode: Callable[[Path], np.ndarray | None],
    *,
    workers: int | None = None,
) -> tuple[DiskImages, np.ndarray]:
    """The images of `files` at `image_size` (height, width) as one cached file, and which
    of them were readable (`decode` gave None for the others; their rows are zeros).
    Decodes only when the cache lacks this listing (one process at a time: the others wait
    for its result); a half-written cache is never read."""
    folder = cache_dir() / key(files, image_size)
    if not (folder / READABLE).is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.with_name(f"{folder.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the workers of a sweep decode once, not each
            if not (folder / READABLE).is_file():
                _write(folder, files, image_size, decode, workers or os.cpu_count() or 1)
    return DiskImages(folder / IMAGES), np.load(folder / READABLE)


def _write(folder, files, image_size, decode, workers):
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    height, width = image_size
    shape = (len(files), height, width, 3)
    readable = np.zeros(len(files), bool)
    blank = np.zeros(shape[1:], np.uint8)
    try:
        with open(partial / IMAGES, "wb") as out, ThreadPoolExecutor(workers) as pool:
            header = {"descr": "|u1", "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(out, header)
            for start in range(0, len(files), DECODE_CHUNK):
                chunk = files[start : start + DECODE_CHUNK]
                # Pillow decodes without the GIL; the file is written in listing order
                for i, image in enumerate(pool.map(decode, chunk), start):
                    readable[i] = image is not None
                    if image is not None and image.shape != blank.shape:
                        raise ValueError(f"{files[i]}: decoded to {image.shape}, not {shape[1:]}")
                    out.write((blank if image is None else image).tobytes())
        np.save(partial / READABLE, readable)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)  # complete or absent: readers look for READABLE
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


class DiskImages:
    """Rows of a (N, H, W, C) uint8 `.npy` file: a dataset's images that stay on disk.

    Indexing with a slice or an index array gives another view without reading; `read()`
    (or `np.asarray`) reads the rows into memory. Arrays' `shape`, `dtype` and `len` hold."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, path: Path, rows: np.ndarray | None = None) -> None:
        self.path = Path(path)
        header = np.load(self.path, mmap_mode="r")  # reads the header only
        self._offset = header.offset
        self._image_shape = tuple(header.shape[1:])
        self._row_bytes = int(np.prod(self._image_shape))
        self.rows = np.arange(len(header)) if rows is None else np.asarray(rows, np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self._image_shape)

    @property
    def nbytes(self) -> int:
        return len(self.rows) * self._row_bytes

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: slice | np.ndarray) -> DiskImages:
        return self._view(self.rows[index])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        images = self.read()
        return images if dtype is None else images.astype(dtype)

    def read(self, positions: np.ndarray | None = None) -> np.ndarray:
        """The images at `positions` of this view (all by default), read from the file."""
        rows = self.rows if positions is None else self.rows[positions]
        images = np.empty((len(rows), *self._image_shape), np.uint8)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for image, row in zip(images, rows):
                got = os.preadv(fd, [image], self._offset + int(row) * self._row_bytes)
                if got != self._row_bytes:
                    raise OSError(f"{self.path}: short read at row {row} (truncated cache?)")
        finally:
            os.close(fd)
        return images

    def concat(self, other: DiskImages) -> DiskImages:
        """This view's rows, then `other`'s, of the same file."""
        if other.path != self.path:
            raise ValueError("cannot join rows of two cache files")
        return self._view(np.concatenate([self.rows, other.rows]))

    def _view(self, rows: np.ndarray) -> DiskImages:
        view = object.__new__(DiskImages)
        view.__dict__.update(self.__dict__, rows=np.asarray(rows, np.int64))
        return view


Images = np.ndarray | DiskImages  # what a Dataset holds: in memory or on disk


def concat(a: Images, b: Images) -> Images:
    """Two image sets as one, read from disk if both are."""
    if isinstance(a, DiskImages) and isinstance(b, DiskImages):
        return a.concat(b)
    return np.concatenate([np.asarray(a), np.asarray(b)])


def size_of(x: Images) -> int:
    """Bytes the images occupy in memory (none when they are read from disk)."""
    return 0 if isinstance(x, DiskImages) else x.nbytes
