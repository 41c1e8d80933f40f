"""``timm-lc sleep-convergence``: Hebbian sleep convergence vs fan-in, measured against theory.

For several fan-ins d = 9 C_in (3 x 3 kernels) it runs one sleep on a small LC layer (6 x 6
outputs, nine pools of four) and plots the distance of the pool deviations to the white-noise
fixed point, relative to its start, after every iteration: once with the fan-in normalised step of
``timm_lc.sharing`` and once with the reference's fixed step 0.1, each next to the expected value
from ``schedule`` (``v <- f(eta) v + eta^2 gamma^2 (d+1)/B``). The fixed step stalls near d = 2431
and diverges above it (that run is rolled back; its curve shows what would have happened).
"""
import math
import warnings
from typing import Dict, List, Optional, Sequence

import torch

from timm_lc.layers import LocallyConnected2d

from .api import share_weights_
from .hebbian import SleepDivergenceWarning
from .schedule import contraction_factor, step_sizes

REFERENCE_STEP = 0.1


def expected_trace(steps: Sequence[float], fan_in: int, batch_size: int, gamma: float) -> List[float]:
    """Expected relative distance to the white-noise fixed point after every step (root of E|.|^2)."""
    v, out = 1.0, []
    for eta in steps:
        v = v * contraction_factor(eta, fan_in, batch_size, gamma) + eta * eta * gamma * gamma * (fan_in + 1) / batch_size
        out.append(math.sqrt(v))
    return out


def measure(in_channels: int, iterations: int, batch_size: int, gamma: float, seed: int,
            lr: Optional[float]) -> Dict[str, object]:
    """One sleep on a (in_channels -> 2, 3 x 3, 8 x 8 input) layer; its trace and the theory."""
    torch.manual_seed(seed)
    layer = LocallyConnected2d(in_channels, 2, 3, (8, 8), bias=False)
    options = dict(schedule="constant", check_every=iterations) if lr is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SleepDivergenceWarning)
        report = share_weights_(layer, "hebbian", iterations=iterations, batch_size=batch_size, gamma=gamma,
                                lr=lr, seed=seed, trace=True, **options)
    steps = step_sizes(iterations, layer.fan_in, batch_size, gamma, lr, "constant" if lr is not None else "auto")
    return {"fan_in": layer.fan_in, "measured": report.layers[0].trace,
            "expected": expected_trace(steps, layer.fan_in, batch_size, gamma),
            "rolled_back": report.layers[0].rolled_back}
