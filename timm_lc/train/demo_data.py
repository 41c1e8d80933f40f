"""The embedded demo data set: scikit-learn's 1,797 real 8x8 handwritten digits on a larger canvas.

The digits ship inside the scikit-learn wheel, so the demo trains offline. Each digit is placed on
a ``canvas_size`` x ``canvas_size`` black canvas at a random position: training placements are
drawn afresh every epoch (within ``translate`` pixels of the centre), test placements are fixed
per image (within ``test_shift`` pixels). A convolution recognises a digit anywhere; a locally
connected net must learn every position separately, which is what weight sharing repairs.
The train/test split is fixed (independent of the training seed): 1,437 train, 360 test images.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .canvas import placement_range
from .seeding import derive_seed

__all__ = ["DigitsCanvas", "load_digits_split", "DIGITS_MEAN", "DIGITS_STD"]

DIGIT_SIZE = 8
SPLIT_SEED = 0
TEST_SIZE = 360  # ~20% of the 1,797 images
# statistics of the 8x8 digits scaled to [0, 1] (pixels / 16), over the whole data set
DIGITS_MEAN = (0.3053,)
DIGITS_STD = (0.3760,)


def load_digits_split(split: str) -> Tuple[Tensor, Tensor]:
    """Returns ``(images (N, 8, 8) float in [0, 1], labels (N,) int64)`` of the fixed train or test split.

    Args:
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(images, labels)`` of the split, in a fixed shuffled order.

    Raises:
        ValueError: if ``split`` is neither ``"train"`` nor ``"test"``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"demo data set: expected split 'train' or 'test', got {split!r}")
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    index = order[TEST_SIZE:] if split == "train" else order[:TEST_SIZE]
    return images[index], labels[index]


class DigitsCanvas(torch.utils.data.Dataset):
    """Digits placed on a canvas; item ``i`` or ``(epoch, i[, repeat])`` -> ``(image (1, S, S), label)``.

    ``train=True`` draws the placement from a generator seeded by (seed, epoch, i, repeat), so the data
    is reproducible and independent of any global RNG (exact resume, any number of workers).
    The test split uses one fixed placement per image. ``indices`` keeps those images of the split
    (after ``max_samples``); ``fixed_placement`` (default: test split only) places each image once.
    """

    def __init__(self, split: str = "train", canvas_size: int = 16, translate: int = 4, seed: int = 0,
                 max_samples: Optional[int] = None, normalize: bool = True,
                 indices: Optional[Sequence[int]] = None, fixed_placement: Optional[bool] = None):
        self.images, self.labels = load_digits_split(split)
        if max_samples is not None:
            self.images, self.labels = self.images[:max_samples], self.labels[:max_samples]
        if indices is not None:
            index = torch.as_tensor(list(indices), dtype=torch.long)
            self.images, self.labels = self.images[index], self.labels[index]
        self.canvas_size = canvas_size
        self.translate = translate
        self.seed = seed
        self.train = split == "train" if fixed_placement is None else not fixed_placement
        self.normalize = normalize
        self._lo, self._hi = placement_range(canvas_size, DIGIT_SIZE, translate)
        if not self.train:
            gen = torch.Generator().manual_seed(SPLIT_SEED + 1)
            self._fixed = torch.randint(self._lo, self._hi + 1, (len(self.labels), 2), generator=gen)

    def __len__(self) -> int:
        return len(self.labels)

    def offset(self, index: int, epoch: int = 0, repeat: int = 0) -> Tuple[int, int]:
        """Top-left corner of image ``index`` in ``epoch`` (``repeat``: which of its augmented copies).

        Args:
            index: the image's index in this data set.
            epoch: the training epoch (ignored for fixed placements).
            repeat: which augmented copy of the image (ignored for fixed placements).

        Returns:
            ``(top, left)`` in pixels: seeded by (seed, epoch, index, repeat) in training, else the
            image's fixed placement.
        """
        if not self.train:
            top, left = self._fixed[index].tolist()
            return top, left
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, index, repeat))
        top, left = torch.randint(self._lo, self._hi + 1, (2,), generator=gen).tolist()
        return top, left

    def __getitem__(self, item) -> Tuple[Tensor, int]:
        epoch, index, repeat = (tuple(item) + (0,))[:3] if isinstance(item, tuple) else (0, item, 0)
        top, left = self.offset(int(index), epoch, repeat)
        canvas = torch.zeros(1, self.canvas_size, self.canvas_size)
        canvas[0, top:top + DIGIT_SIZE, left:left + DIGIT_SIZE] = self.images[index]
        if self.normalize:
            canvas = (canvas - DIGITS_MEAN[0]) / DIGITS_STD[0]
        return canvas, int(self.labels[index])
