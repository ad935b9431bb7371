"""Real data that ships with the machine's packages (nothing is downloaded at run time)."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass

import numpy as np

FASHION_MNIST_DIR = os.environ.get("TVM_DUAL_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")


class DatasetMissing(FileNotFoundError):
    """A data set tvm_dual expects from a system package is not installed."""


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@dataclass
class ImageSplit:
    images: np.ndarray  # (n, 784) float32 in [0, 1]
    labels: np.ndarray  # (n,) int64


def load_fashion_mnist(split: str) -> ImageSplit:
    """split "train" (60k) or "test" (10k), from Debian's dataset-fashion-mnist package."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images_path = os.path.join(FASHION_MNIST_DIR, f"{prefix}-images-idx3-ubyte.gz")
    labels_path = os.path.join(FASHION_MNIST_DIR, f"{prefix}-labels-idx1-ubyte.gz")
    if not os.path.exists(images_path):
        raise DatasetMissing(
            f"Fashion-MNIST not found at {FASHION_MNIST_DIR}; install the Debian package "
            f"dataset-fashion-mnist (`make setup` does) or set TVM_DUAL_FASHION_MNIST"
        )
    images = _read_idx(images_path).reshape(-1, 28 * 28).astype(np.float32) / 255.0
    labels = _read_idx(labels_path).astype(np.int64)
    return ImageSplit(images=images, labels=labels)
