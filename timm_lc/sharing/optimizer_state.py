"""Optimiser state pooled like the weights: at a share, each pool's state becomes the pool's mean.

Adam divides each position's update by that position's own gradient history, so after a share
the pooled filters, equal now, would move apart again at different speeds: positions that rarely
see signal (background) take full-size noisy steps. Averaging the optimiser's per-weight state
over the same pools as the weights (Adam's ``exp_avg`` and ``exp_avg_sq``, SGD's
``momentum_buffer``, any state tensor shaped like the weight) makes the next update of a pool
the update a convolution would make in the pooled parameterisation (docs/method.md section 3).
"""
from typing import Collection, Dict, List, Optional

import torch
from torch import Tensor, nn

from .instant import average_pools_
from .metrics import lc_layers
from .pools import find_pools

__all__ = ["pool_optimizer_state_", "weight_shaped_state"]


def weight_shaped_state(optimizer: torch.optim.Optimizer, weight: Tensor) -> Dict[str, Tensor]:
    """The state tensors ``optimizer`` keeps for ``weight`` that have the weight's shape (Adam's moments, momentum).

    Args:
        optimizer: the optimiser whose ``state`` is read.
        weight: the parameter whose state is wanted.

    Returns:
        The weight-shaped state tensors by state name (the tensors themselves, not copies); empty when
        the optimiser keeps no state for ``weight`` yet.
    """
    state = optimizer.state.get(weight, {})
    return {name: value for name, value in state.items()
            if isinstance(value, Tensor) and value.shape == weight.shape}


@torch.no_grad()
def pool_optimizer_state_(optimizer: torch.optim.Optimizer, module: nn.Module, pools: str = "paper",
                          layers: Optional[Collection[str]] = None) -> List[str]:
    """Averages ``optimizer``'s weight-shaped state of the LC layers of ``module`` over their pools, in place.

    Args:
        optimizer: the optimiser training ``module`` (an Accelerate-wrapped one works too).
        module: the model (unwrapped) whose ``LocallyConnected2d`` layers are shared.
        pools: the pool mode the weights were shared over (``paper``, ``residue`` or ``full``).
        layers: names of the LC layers to pool (as in ``named_modules``); None pools all.

    Returns:
        The ``"layer.state_name"`` entries that were averaged (state not created yet is skipped).
    """
    pooled = []
    for name, layer in lc_layers(module):
        if layers is not None and name not in layers:
            continue
        positions = layer.output_size[0] * layer.output_size[1]
        for state_name, value in weight_shaped_state(optimizer, layer.weight).items():
            rows = value.view(positions, -1) if value.is_contiguous() else value.reshape(positions, -1)
            average_pools_(rows, find_pools(layer, pools))
            if rows.data_ptr() != value.data_ptr():
                value.copy_(rows.view(value.shape))
            pooled.append(f"{name}.{state_name}")
    return pooled
