"""Fashion-MNIST offline: the IDX files of Debian's ``dataset-fashion-mnist`` as a ``datasets`` split.

70,000 real 28x28 greyscale photographs of clothing in 10 classes (60,000 train, 10,000 test), the
same images and order as the Hub's ``zalando-datasets/fashion_mnist`` (columns ``image``, ``label``).
``apt-get install dataset-fashion-mnist`` puts them under ``/usr/share/datasets/fashion-mnist``;
``TIMM_LC_FASHION_MNIST_DIR`` points elsewhere.
"""
import gzip
import os
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["HUB_ID", "CLASS_NAMES", "local_dir", "load_split"]

HUB_ID = "zalando-datasets/fashion_mnist"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
_FILES = {"train": "train", "test": "t10k"}


def local_dir() -> Optional[Path]:
    """The directory holding the IDX files, or None when they are not installed.

    Returns:
        ``TIMM_LC_FASHION_MNIST_DIR`` (default ``/usr/share/datasets/fashion-mnist``) if it holds
        ``train-images-idx3-ubyte.gz``, else None.
    """
    root = Path(os.environ.get("TIMM_LC_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
    return root if (root / "train-images-idx3-ubyte.gz").is_file() else None


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (big-endian header: magic, dims) as a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{str(path)!r} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split: str, root: Path, max_samples: Optional[int] = None):
    """One split (``train`` or ``test``) as a ``datasets.Dataset`` with ``image`` and ``label`` columns.

    Args:
        split: ``"train"`` or ``"test"``.
        root: the directory holding the gzipped IDX files (see ``local_dir``).
        max_samples: keep only the first n images (None: all); fewer images are quicker to encode.

    Returns:
        The split as a ``datasets.Dataset`` (``image``: PIL image, ``label``: ``ClassLabel``).

    Raises:
        ValueError: if ``split`` is unknown or a file is not an unsigned-byte IDX file.
        FileNotFoundError: if the split's IDX files are missing from ``root``.
    """
    import datasets
    if split not in _FILES:
        raise ValueError(f"Fashion-MNIST has splits {list(_FILES)}, not {split!r}")
    images = _read_idx(root / f"{_FILES[split]}-images-idx3-ubyte.gz")
    labels = _read_idx(root / f"{_FILES[split]}-labels-idx1-ubyte.gz")
    n = len(labels) if max_samples is None else min(max_samples, len(labels))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASS_NAMES))})
    return datasets.Dataset.from_dict({"image": list(images[:n]), "label": labels[:n].tolist()}, features=features)
