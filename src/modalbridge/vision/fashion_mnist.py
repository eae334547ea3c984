"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (idx files, gzip), read with numpy.

Xiao et al. 2017, https://arxiv.org/abs/1708.07747. 60k train + 10k test, 28x28 grayscale, 10 classes.
"""

from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from modalbridge.errors import UserError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def data_dir() -> Path:
    return Path(os.environ.get("FASHION_MNIST_DIR", DEFAULT_DIR))


def _read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (magic: 0x00 0x00 dtype ndim, then ndim big-endian int32 sizes, then data)."""
    if not path.is_file():
        raise UserError(f"Fashion-MNIST file missing: {path} (apt-get install dataset-fashion-mnist)")
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated: {data.size} bytes for shape {tuple(dims)}")
    return data.reshape(tuple(int(d) for d in dims))


@lru_cache(maxsize=4)
def load(split: str = "train", root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of ``split`` ('train' or 'test')."""
    if split not in _FILES:
        raise UserError(f"Fashion-MNIST split must be 'train' or 'test', got '{split}'")
    base = Path(root) if root else data_dir()
    images, labels = (_read_idx(base / f) for f in _FILES[split])
    if len(images) != len(labels):
        raise UserError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    return images, labels.astype(np.int64)
