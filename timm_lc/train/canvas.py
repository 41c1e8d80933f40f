"""Objects placed on a larger black canvas: where a locally connected net must learn every position.

A convolution recognises an object anywhere; an LC net must learn each position separately, so
the placement range sets how much weight sharing can help. The embedded digits use it
(``DigitsCanvas``), and any small data set does with ``object_size`` (e.g. Fashion-MNIST's
photographs downscaled to 14x14 on a 24x24 canvas). Training placements are drawn afresh per
sample and epoch (the dataset seeds the RNG); test placements are fixed per image.
"""
from typing import Tuple

import torch
from torch import Tensor

__all__ = ["placement_range", "PlaceOnCanvas"]


def placement_range(canvas_size: int, object_size: int, shift: int) -> Tuple[int, int]:
    """The (lowest, highest) top-left offset of an object within ``shift`` px of the canvas centre.

    Args:
        canvas_size: side of the square canvas, in pixels.
        object_size: side of the object along the same axis.
        shift: largest distance of the offset from the centred one; clipped to the canvas.

    Returns:
        ``(lowest, highest)`` offsets, both inclusive, within ``[0, canvas_size - object_size]``.

    Raises:
        ValueError: if ``canvas_size`` is smaller than ``object_size``.
    """
    if canvas_size < object_size:
        raise ValueError(f"canvas_size: expected >= the object size {object_size}, got {canvas_size}")
    free = canvas_size - object_size
    centre = free // 2
    return max(0, centre - shift), min(free, centre + shift)


class PlaceOnCanvas:
    """Transform: a (C, h, w) tensor at a random offset within ``shift`` px of the centre of a black canvas.

    The offset is drawn from torch's global RNG, which the datasets seed per sample.
    """

    def __init__(self, canvas_size: int, shift: int):
        self.canvas_size, self.shift = canvas_size, shift

    def __call__(self, image: Tensor) -> Tensor:
        channels, height, width = image.shape
        top_range = placement_range(self.canvas_size, height, self.shift)
        left_range = placement_range(self.canvas_size, width, self.shift)
        top = int(torch.randint(top_range[0], top_range[1] + 1, ()))
        left = int(torch.randint(left_range[0], left_range[1] + 1, ()))
        canvas = image.new_zeros(channels, self.canvas_size, self.canvas_size)
        canvas[:, top:top + height, left:left + width] = image
        return canvas

    def __repr__(self) -> str:
        return f"{type(self).__name__}(canvas_size={self.canvas_size}, shift={self.shift})"
