"""The lateral circuit behind dynamic weight sharing, simulated explicitly (docs/method.md section 3).

Every pool has excitatory rates r_i (its members) and one inhibitory rate r_inh:

    tau dr_i/dt   = -r_i + w_i . x - alpha r_inh + b
    tau dr_inh/dt = -r_inh + mean_j r_j - b

integrated with explicit Euler steps from rest (r = b, r_inh = 0) to steady state, where
``r_i - b = z_i - alpha/(1+alpha) zbar``; then the plasticity
``w_i <- w_i - eta [ mean_batch (r_i - b) x + gamma (w_i - w_i^anchor) ]``. The deviations
follow exactly the Hebbian rule; the pool mean additionally feels ``zbar/(1+alpha)`` and
shrinks to ``wbar* = gamma (C/(1+alpha) + gamma I)^-1 wbar^anchor`` (white noise:
``gamma (1+alpha) / (1 + gamma (1+alpha)) wbar^anchor``), recovering the Hebbian rule as alpha grows.

Euler is stable only for ``dt < 2 tau / (1 + alpha)`` (the inhibitory loop oscillates at
``sqrt(alpha)/tau``); the default ``dt = tau / (1 + alpha)`` damps it fastest, and the default
number of steps settles to ``tol``. Cost grows like alpha: this mode models the biology; use
``hebbian`` for speed. With the paper's gamma = 1e-5 any affordable alpha lets the pool means decay
over long sleeps (the fixed point above is ~gamma (1+alpha) wbar); study it with a larger gamma.
Pools with a single member have no partner to share with and are untouched.
"""
from typing import Optional

import torch
from timm_lc_settings.sleep import rate_dynamics
from torch import Tensor

from .blocks import PoolBlock


class RateRule:
    """Per-block update: settle the circuit with explicit Euler, then the rate-based plasticity."""
    moves_mean = True

    def __init__(self, alpha: float = 10.0, tau: float = 1.0, b: float = 1.0, dt: Optional[float] = None,
                 steps: Optional[int] = None, tol: float = 1e-4):
        settings = rate_dynamics(alpha=alpha, tau=tau, b=b, dt=dt, steps=steps, tol=tol)
        self.alpha, self.tau, self.b, self.dt, self.steps = (settings[k] for k in ("alpha", "tau", "b", "dt", "steps"))
        self.settle_error = 0.0

    def settle(self, z: Tensor, block: PoolBlock) -> Tensor:
        """Steady-state ``r - b`` of every member (groups, rows, B) for drives ``z``, by Euler steps."""
        h, alpha, b = self.dt / self.tau, self.alpha, self.b
        seg = block.segment
        inv_counts = (1.0 / block.counts)[None, :, None]
        r = torch.full_like(z, b)
        r_inh = torch.zeros(z.shape[0], block.counts.numel(), z.shape[2], device=z.device, dtype=z.dtype)
        for _ in range(self.steps):
            r_bar = torch.zeros_like(r_inh).index_add_(1, seg, r).mul_(inv_counts)
            drive = (z + b - r).sub_(r_inh.index_select(1, seg), alpha=alpha)
            r_inh.add_(r_bar.sub_(r_inh).sub_(b), alpha=h)
            r.add_(drive, alpha=h)
        return r.sub_(b)

    def __call__(self, block: PoolBlock, x: Tensor, step: float, gamma: float,
                 anchor: Optional[Tensor], anchor_mean: Optional[Tensor]) -> None:
        seg = block.segment
        z_bar = torch.bmm(block.mean, x)  # (groups, segments, B): the pool mean's drive
        z = torch.bmm(block.dev, x).add_(z_bar.index_select(1, seg))
        y = self.settle(z, block)
        exact = z.sub_(z_bar.index_select(1, seg), alpha=self.alpha / (1.0 + self.alpha))
        err = float((y - exact).norm() / exact.norm().clamp_min(1e-30))
        self.settle_error = max(self.settle_error, err)
        grad = torch.bmm(y, x.transpose(1, 2)).div_(x.shape[-1])  # (groups, rows, d)
        grad_mean = torch.zeros_like(block.mean).index_add_(1, seg, grad).div_(block.counts[None, :, None])
        grad.sub_(grad_mean.index_select(1, seg))
        if gamma > 0:
            block.dev.mul_(1.0 - step * gamma).add_(anchor, alpha=step * gamma)
            block.mean.mul_(1.0 - step * gamma).add_(anchor_mean, alpha=step * gamma)
        block.dev.add_(grad, alpha=-step)
        block.mean.add_(grad_mean, alpha=-step)

    def extras(self) -> dict:
        return {"alpha": self.alpha, "tau": self.tau, "b": self.b, "dt": self.dt, "euler_steps": self.steps,
                "settle_error": self.settle_error}
