"""Instant sharing: every pooled filter replaced by its pool mean, exactly, in one step.

This is the gamma -> 0, infinitely long sleep limit of the Hebbian rule. With ``paper`` pools it
averages the residue classes of the *regular* positions only (those whose receptive field sees the
tiled noise) and leaves border positions alone, i.e. it lands exactly on the Hebbian fixed point;
the reference's instant mode (``share_weights_instantly``, behind the paper's network results)
instead averages the residue classes *including* border positions: ``residue`` pools reproduce
it exactly. ``full`` pools average all positions of a channel,
turning the layer into a convolution with the mean kernel.

Means are computed in float64 for float64 weights and in float32 otherwise, relative to a pool's
first member (``blocks.pool_mean``): the result is the pool mean to the weight's precision, and
sharing an already shared layer leaves it bitwise unchanged.
"""
import torch
from torch import Tensor

from timm_lc.layers import LocallyConnected2d

from .blocks import compute_dtype, pool_mean, writable_filters
from .pools import LayerPools


@torch.no_grad()
def average_pools_(rows: Tensor, pools: LayerPools) -> None:
    """Sets the rows of ``rows`` (output positions first) of every pool to the pool's mean, in place.

    The mean is computed in ``compute_dtype`` (float64 for float64 tensors, float32 otherwise) by
    ``pool_mean`` and cast back to ``rows.dtype``.

    Args:
        rows: (positions, ...) tensor: a layer's filters or an optimiser state shaped like them.
        pools: The layer's pools.
    """
    dtype = compute_dtype(rows.dtype)
    for pos in pools.positions:
        pos = pos.to(rows.device)
        mean = pool_mean(rows.index_select(0, pos).to(dtype))
        rows.index_copy_(0, pos, mean.to(rows.dtype).expand(pos.numel(), *mean.shape))


@torch.no_grad()
def instant_share_(layer: LocallyConnected2d, pools: LayerPools) -> None:
    """Sets every pooled filter of ``layer`` to its pool mean, in place.

    Args:
        layer: The layer whose weight is overwritten.
        pools: Its pools (``find_pools``); positions outside every pool are left alone.
    """
    with writable_filters(layer) as flat:
        average_pools_(flat, pools)
