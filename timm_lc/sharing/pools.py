"""Pools: which output positions of a LocallyConnected2d share their filters during sleep.

During sleep a layer's input is a kh x kw Gaussian noise patch ``xi`` tiled over the (unpadded)
input with period (kh, kw): pixel (y, x) of channel c holds ``xi[c, y mod kh, x mod kw]``.
Position (h, w) reads pixel ``(h*s_h + u*d_h - pad_top, w*s_w + v*d_w - pad_left)`` at kernel
offset (u, v). If it only ever reads the tiling (no zero padding), the noise it sees at offset
(u, v) is ``xi[:, (r_h + u*d_h) mod kh, (r_w + v*d_w) mod kw]`` with the *residue*
``r = ((h*s_h - pad_top) mod kh, (w*s_w - pad_left) mod kw)``: two such positions see identical
noise exactly when their residues agree, so the pools are residue classes (docs/method.md section 2).
This holds for any stride, dilation,
padding, non-square input and groups (each group's filters see their own channels' noise).

``paper`` pools are these residue classes of the *regular* positions: those whose whole receptive
field reads the tiling (the reference's Hebbian pools). They are found by tiling an image of
noise-slot indices, padding it with the layer's own padding mode and comparing every position's
patch with the tile window its residue predicts, so zero padding makes border positions irregular
(singletons) while e.g. circular padding of a multiple-of-k input keeps them regular.

``residue`` pools are the reference's *instant-sharing* pools, the ones behind the paper's network
results: output positions grouped by ``(h mod kh, w mod kw)``, borders included (a 1x1 layer becomes
an exact convolution). For the noise-driven modes (Hebbian, rate) border positions join their class
by tiling the sleep noise over the *padded* input (origin at padded pixel 0) instead of the unpadded
one: then no position reads padding, position (h, w) reads slot ``((h*s_h + u*d_h) mod kh, ...)``,
which depends on ``h mod kh`` only, so every member of a class sees identical noise and the
Hebbian fixed point is exactly the pool mean of the instant mode. (The alternative, keeping the
zero padding during sleep, would give border members a different input than their class and no
common fixed point.) ``full`` pools hold every position of a channel: the exact-convolution limit.
Pools with one member are not listed (nothing to share).
"""
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from timm_lc.layers import LocallyConnected2d
from timm_lc_settings.sleep import POOL_MODES


@dataclass(frozen=True)
class LayerPools:
    """The shared pools of one layer geometry (CPU tensors; positions are flat ``h * W_out + w``).

    ``positions[i]``: the member positions of pool i (>= 2 members, ascending).
    ``slot_maps[i]``: (kh*kw,) noise slot ``a * kw + b`` that kernel offset ``u * kw + v`` of every
    member reads (identity for ``full``: every position sees the noise patch as it is).
    ``multiplicity``: the largest number of kernel offsets reading one noise pixel; 1 (``bijective``:
    every slot map is a permutation) unless a dilation shares a factor with the kernel size.
    """
    output_size: Tuple[int, int]
    positions: Tuple[Tensor, ...]
    slot_maps: Tuple[Tensor, ...]
    multiplicity: int

    @property
    def bijective(self) -> bool:
        return self.multiplicity == 1

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def num_shared(self) -> int:
        """Number of positions that belong to a pool with at least two members."""
        return sum(int(p.numel()) for p in self.positions)

    def pool_ids(self) -> Tensor:
        """(H_out, W_out) pool index of every position; -1 for positions that share with nobody."""
        ids = torch.full((self.output_size[0] * self.output_size[1],), -1, dtype=torch.long)
        for i, pos in enumerate(self.positions):
            ids[pos] = i
        return ids.view(self.output_size)


def _check_mode(pools: str) -> None:
    if pools not in POOL_MODES:
        raise ValueError(f"pools must be one of {POOL_MODES}, got {pools!r}")


def _slot_map(residue: Tuple[int, int], kernel_size: Tuple[int, int], dilation: Tuple[int, int]) -> Tensor:
    kh, kw = kernel_size
    a = (residue[0] + torch.arange(kh) * dilation[0]) % kh
    b = (residue[1] + torch.arange(kw) * dilation[1]) % kw
    return (a[:, None] * kw + b[None, :]).reshape(-1)


def _full_pools(kernel_size: Tuple[int, int], output_size: Tuple[int, int]) -> LayerPools:
    """One pool of all positions (none for a single position), every member reading the patch as it is."""
    kh, kw = kernel_size
    ho, wo = output_size
    if ho * wo < 2:
        return LayerPools(output_size, (), (), 1)
    return LayerPools(output_size, (torch.arange(ho * wo),), (torch.arange(kh * kw),), 1)


def _residue_pools(kernel_size: Tuple[int, int], stride: Tuple[int, int], dilation: Tuple[int, int],
                   output_size: Tuple[int, int], multiplicity: int) -> LayerPools:
    """Output residue classes, borders included; the noise is tiled over the padded input."""
    kh, kw = kernel_size
    ho, wo = output_size
    key = ((torch.arange(ho) % kh)[:, None] * kw + (torch.arange(wo) % kw)[None, :]).reshape(-1)
    positions, slot_maps = [], []
    for k in range(kh * kw):
        members = torch.nonzero(key == k).flatten()
        if members.numel() >= 2:
            i, j = divmod(k, kw)
            positions.append(members)
            slot_maps.append(_slot_map(((i * stride[0]) % kh, (j * stride[1]) % kw), kernel_size, dilation))
    return LayerPools(output_size, tuple(positions), tuple(slot_maps), multiplicity)


def _paper_pools(input_size: Tuple[int, int], kernel_size: Tuple[int, int], stride: Tuple[int, int],
                 dilation: Tuple[int, int], pads: Tuple[int, int, int, int], padding_mode: str,
                 output_size: Tuple[int, int], multiplicity: int) -> LayerPools:
    """Residue classes of the regular positions: those whose whole receptive field reads the tiling."""
    kh, kw = kernel_size
    ho, wo = output_size
    left, right, top, bottom = pads
    rows = torch.arange(input_size[0]) % kh
    cols = torch.arange(input_size[1]) % kw
    slots = (rows[:, None] * kw + cols[None, :]).double()[None, None]  # (1, 1, H, W) slot index image
    if padding_mode == "zeros":
        slots = F.pad(slots, pads, value=-1.0)  # -1: a padding pixel, never part of the tiling
    else:
        slots = F.pad(slots, pads, mode=padding_mode)
    seen = F.unfold(slots, kernel_size, dilation=dilation, stride=stride)[0].long()  # (kh*kw, L)

    r_h = (torch.arange(ho) * stride[0] - top) % kh
    r_w = (torch.arange(wo) * stride[1] - left) % kw
    u = torch.arange(kh) * dilation[0]
    v = torch.arange(kw) * dilation[1]
    exp_a = (r_h[:, None, None, None] + u[None, None, :, None]) % kh  # (ho, 1, kh, 1)
    exp_b = (r_w[None, :, None, None] + v[None, None, None, :]) % kw  # (1, wo, 1, kw)
    expected = (exp_a * kw + exp_b).reshape(ho * wo, kh * kw).t()
    regular = (seen == expected).all(0)  # (ho * wo,)

    key = (r_h[:, None] * kw + r_w[None, :]).reshape(-1)
    positions: List[Tensor] = []
    slot_maps: List[Tensor] = []
    for k in range(kh * kw):
        members = torch.nonzero(regular & (key == k)).flatten()
        if members.numel() >= 2:
            positions.append(members)
            slot_maps.append(_slot_map((k // kw, k % kw), kernel_size, dilation))
    return LayerPools(output_size, tuple(positions), tuple(slot_maps), multiplicity)


@lru_cache(maxsize=256)
def _find_pools(
        pools: str,
        input_size: Tuple[int, int],
        kernel_size: Tuple[int, int],
        stride: Tuple[int, int],
        dilation: Tuple[int, int],
        pads: Tuple[int, int, int, int],
        padding_mode: str,
        output_size: Tuple[int, int],
) -> LayerPools:
    """The pools of one layer geometry in one mode (cached: layers of equal geometry share them)."""
    if pools == "full":
        return _full_pools(kernel_size, output_size)
    multiplicity = math.gcd(dilation[0], kernel_size[0]) * math.gcd(dilation[1], kernel_size[1])
    if pools == "residue":
        return _residue_pools(kernel_size, stride, dilation, output_size, multiplicity)
    return _paper_pools(input_size, kernel_size, stride, dilation, pads, padding_mode, output_size, multiplicity)


def find_pools(layer: LocallyConnected2d, pools: str = "paper") -> LayerPools:
    """The pools of ``layer``.

    Depends only on the layer's geometry, so results are cached and shared between layers.

    Args:
        layer: the LC layer.
        pools: ``paper`` (residue classes of regular positions), ``residue`` (output residue
            classes ``(h mod kh, w mod kw)``, borders included) or ``full`` (all positions).

    Returns:
        The layer's :class:`LayerPools`.

    Raises:
        TypeError: ``layer`` is not a LocallyConnected2d.
        ValueError: an unknown ``pools`` mode.
    """
    if not isinstance(layer, LocallyConnected2d):
        raise TypeError(f"expected a LocallyConnected2d, got {type(layer).__name__}")
    _check_mode(pools)
    return _find_pools(pools, tuple(layer.input_size), tuple(layer.kernel_size), tuple(layer.stride),
                       tuple(layer.dilation), tuple(layer.pads), layer.padding_mode, tuple(layer.output_size))


def pool_ids(layer: LocallyConnected2d, pools: str = "paper") -> Tensor:
    """The pool index of every output position of ``layer``.

    Args:
        layer: the LC layer.
        pools: the pool mode, as in :func:`find_pools`.

    Returns:
        An (H_out, W_out) long tensor: each position's pool, -1 where it shares with nobody.

    Raises:
        TypeError: ``layer`` is not a LocallyConnected2d.
        ValueError: an unknown ``pools`` mode.
    """
    return find_pools(layer, pools).pool_ids()
