"""How shared a layer's filters are: the paper's per-pool SNR and the deviation from pool means.

For every pool with at least two members, output channel and kernel entry, m is the pool mean of
that weight and v its pool variance (population variance over the members). The SNR is the mean
of ``m^2 / v`` over all those entries (docs/method.md section 4: it measures the distance from the
k^2-group solution that sharing produces, not from a full convolution). Statistics are computed in
float64 for float64 weights and float32 otherwise; ``v`` is floored at that precision's resolution
of m, so filters equal to float precision give a large finite SNR (<= 1/eps^2) instead of inf.
The relative deviation is ``|w - pool mean| / |w|`` over all pooled filters: 1 for unrelated
zero-mean filters, 0 when shared.
"""
import math
from typing import Dict, Optional

import torch
from torch import nn

from timm_lc.layers import LocallyConnected2d

from .blocks import compute_dtype, flat_filters, pool_mean
from .pools import LayerPools, find_pools


@torch.no_grad()
def pool_statistics(layer: LocallyConnected2d, pools: LayerPools) -> Dict[str, float]:
    """Sums over one layer's pooled entries: ``snr_sum``, ``entries``, ``dev_sq``, ``norm_sq``.

    Sums are accumulated on the weight's device in fp64 and read back once (one host sync per layer).
    """
    flat = flat_filters(layer)
    dtype = compute_dtype(flat.dtype)
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    sums = torch.zeros(3, dtype=torch.float64, device=flat.device)  # snr_sum, dev_sq, norm_sq
    entries = 0
    for pos in pools.positions:
        w = flat.index_select(0, pos.to(flat.device)).to(dtype)
        m = pool_mean(w)
        v = (w - m).square().mean(0)
        m2 = m.square()
        floor = (m2 * (eps * eps)).clamp_min(tiny)
        sums += torch.stack([(m2 / torch.maximum(v, floor)).double().sum(), v.double().sum() * pos.numel(),
                             w.double().square().sum()])
        entries += m.numel()
    snr_sum, dev_sq, norm_sq = sums.tolist()
    return {"snr_sum": snr_sum, "entries": entries, "dev_sq": dev_sq, "norm_sq": norm_sq}


def summarise(stats: Dict[str, float]) -> Dict[str, Optional[float]]:
    """SNR and relative deviation from pooled sums (``pool_statistics``, or sums of several)."""
    return {
        "snr": stats["snr_sum"] / stats["entries"] if stats["entries"] else None,
        "deviation": math.sqrt(stats["dev_sq"] / stats["norm_sq"]) if stats["norm_sq"] > 0 else (
            0.0 if stats["entries"] else None),
    }


def lc_layers(module: nn.Module):
    """(name, layer) of every LocallyConnected2d in ``module`` (the module itself included), in order."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected an nn.Module (a model or a LocallyConnected2d), got {type(module).__name__}")
    return [(name, m) for name, m in module.named_modules() if isinstance(m, LocallyConnected2d)]


def sharing_snr(module: nn.Module, pools: str = "paper") -> dict:
    """The paper's per-pool SNR and the relative deviation from the pool means, per layer and total.

    The totals weight every pooled kernel entry (SNR) and every pooled weight (deviation) equally.
    Layers without a pool of two or more positions are left out; None means there was nothing to
    measure.

    Args:
        module: a model, or a single LocallyConnected2d.
        pools: the pool mode ('paper', 'residue' or 'full'), as in ``find_pools``.

    Returns:
        ``{"snr": float | None, "deviation": float | None, "layers": {name: {"snr", "deviation",
        "pools", "shared_positions"}}}``.

    Raises:
        TypeError: if ``module`` is not an ``nn.Module``.
        ValueError: if ``pools`` is not a known pool mode.
    """
    total = {"snr_sum": 0.0, "entries": 0, "dev_sq": 0.0, "norm_sq": 0.0}
    layers = {}
    for name, layer in lc_layers(module):
        layer_pools = find_pools(layer, pools)
        if not len(layer_pools):
            continue
        stats = pool_statistics(layer, layer_pools)
        for key in total:
            total[key] += stats[key]
        layers[name] = {**summarise(stats), "pools": len(layer_pools), "shared_positions": layer_pools.num_shared}
    return {**summarise(total), "layers": layers}
