"""A layer's pooled filters gathered once per sleep into matmul-ready blocks.

Within a pool every member sees the same noise patch, so ``z_i - zbar = (w_i - wbar) . x``: the
sleep only needs each filter's deviation from its pool mean, and the pool mean itself is
constant under the Hebbian rule (the deviations sum to zero). A block holds the deviations of
all its pools as one (groups, rows, d) matrix, rows = (pool member, output channel of the group),
so one sleep iteration is ``Z = D @ X`` and ``D -= eta (Z @ X^T / B + ...)``: two batched GEMMs.

When every pool's slot map is a permutation (the usual case), the filters are permuted once into
*noise coordinates* (kernel offset (u, v) -> the noise slot it reads), so every pool sees the same
noise tensor and all pools of a layer form a single block. Otherwise (a dilation sharing a factor
with the kernel size) each pool is a block in weight coordinates with its own gathered noise.
Filter coordinates inside a block are (slot, channel-in-group), channel fastest, as in the weight.

Blocks are computed in ``compute_dtype`` of the weight (float64 for float64 weights, float32
otherwise), and pool means are taken relative to the first member (``pool_mean``), so a pool whose
members are already equal has its value as mean and zero deviations, exactly.
"""
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from timm_lc.layers import LocallyConnected2d

from .pools import LayerPools


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sharing computes in for weights of ``dtype``: float64 for float64, float32 otherwise.

    Args:
        dtype: The weight's dtype.

    Returns:
        ``torch.float64`` for ``torch.float64``, else ``torch.float32``.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def pool_mean(members: Tensor) -> Tensor:
    """The mean over dim 0, as ``members[0] + mean(members - members[0])``.

    Equal members give their own value bitwise (so sharing twice changes nothing), and the shift
    keeps the rounding relative to the members' spread rather than to their magnitude.

    Args:
        members: (n, ...) filters of one pool, in the compute dtype.

    Returns:
        The (...) pool mean.
    """
    first = members[0]
    return (members - first).mean(0).add_(first)


@dataclass
class PoolBlock:
    """Deviations ``dev`` (groups, rows, d) and pool means ``mean`` (groups, pools * C_out/groups, d).

    ``segment[row]`` is the (pool, channel) index of a row into ``mean``; ``counts`` the pool size
    of every segment. ``noise_index`` is None when the block lives in noise coordinates (it reads
    the noise as drawn), else the (d,) noise coordinate every filter coordinate reads.
    ``members``: per pool, (positions, first row, slot map) for writing back.
    """
    dev: Tensor
    mean: Tensor
    segment: Tensor
    counts: Tensor
    noise_index: Optional[Tensor]
    members: List[Tuple[Tensor, int, Tensor]] = field(default_factory=list)

    def inputs(self, noise: Tensor) -> Tensor:
        """This block's (groups, d, B) input from noise drawn as (groups, d, B) in noise coordinates."""
        return noise if self.noise_index is None else noise.index_select(1, self.noise_index)


def flat_filters(layer: LocallyConnected2d) -> Tensor:
    """The weight as (positions, C_out, kh*kw, C_in/groups), a view when possible."""
    ho, wo = layer.output_size
    kh, kw = layer.kernel_size
    return layer.weight.detach().reshape(ho * wo, layer.out_channels, kh * kw, layer.in_channels // layer.groups)


@contextmanager
def writable_filters(layer: LocallyConnected2d) -> Iterator[Tensor]:
    """``flat_filters`` to write into; if the reshape had to copy, the copy is written back on exit."""
    weight = layer.weight
    flat = flat_filters(layer)
    yield flat
    if flat.data_ptr() != weight.data_ptr():
        weight.copy_(flat.view(weight.shape))


def gather_blocks(layer: LocallyConnected2d, pools: LayerPools) -> List[PoolBlock]:
    """Gathers the pooled filters of ``layer`` into blocks (deviations and means) in its ``compute_dtype``."""
    weight = flat_filters(layer)
    device, dtype = weight.device, compute_dtype(weight.dtype)
    g = layer.groups
    cog, cg = layer.out_channels // g, layer.in_channels // g
    slots = layer.kernel_size[0] * layer.kernel_size[1]
    d = slots * cg
    groups_of_pools = [list(range(len(pools)))] if pools.bijective else [[i] for i in range(len(pools))]
    blocks = []
    for pool_list in groups_of_pools:
        rows = sum(int(pools.positions[i].numel()) for i in pool_list) * cog
        dev = torch.empty(g, rows, d, device=device, dtype=dtype)
        mean = torch.empty(g, len(pool_list) * cog, d, device=device, dtype=dtype)
        segment, counts, members = [], [], []
        row = 0
        for j, i in enumerate(pool_list):
            pos = pools.positions[i].to(device)
            n = int(pos.numel())
            slot_map = pools.slot_maps[i].to(device)
            w = weight.index_select(0, pos).to(dtype).view(n, g, cog, slots, cg)
            if pools.bijective:  # to noise coordinates: slot slot_map[s] holds offset s
                w = w.index_select(3, torch.argsort(slot_map))
            m = pool_mean(w)  # (g, cog, slots, cg)
            dev[:, row:row + n * cog].view(g, n, cog, slots, cg).copy_((w - m).permute(1, 0, 2, 3, 4))
            mean[:, j * cog:(j + 1) * cog].copy_(m.reshape(g, cog, d))
            segment.append((torch.arange(cog, device=device) + j * cog).repeat(n))
            counts.append(torch.full((cog,), n, device=device, dtype=dtype))
            members.append((pos, row, slot_map))
            row += n * cog
        noise_index = None
        if not pools.bijective:
            i = pool_list[0]
            noise_index = (pools.slot_maps[i].to(device)[:, None] * cg + torch.arange(cg, device=device)).reshape(-1)
        blocks.append(PoolBlock(dev, mean, torch.cat(segment), torch.cat(counts), noise_index, members))
    return blocks


@torch.no_grad()
def scatter_blocks_(layer: LocallyConnected2d, blocks: List[PoolBlock]) -> None:
    """Writes ``mean + dev`` of every block back into ``layer.weight`` (cast to its dtype), in place."""
    g = layer.groups
    cog, cg = layer.out_channels // g, layer.in_channels // g
    slots = layer.kernel_size[0] * layer.kernel_size[1]
    with writable_filters(layer) as flat:
        for block in blocks:
            for j, (pos, row, slot_map) in enumerate(block.members):
                n = int(pos.numel())
                w = block.dev[:, row:row + n * cog].view(g, n, cog, slots, cg) \
                    + block.mean[:, j * cog:(j + 1) * cog].view(g, 1, cog, slots, cg)
                if block.noise_index is None:  # back to weight coordinates: offset s reads slot slot_map[s]
                    w = w.index_select(3, slot_map)
                flat.index_copy_(0, pos, w.permute(1, 0, 2, 3, 4).reshape(n, g * cog, slots, cg).to(flat.dtype))
