"""The Hebbian sleep of one layer: stochastic anti-Hebbian updates on tiled Gaussian noise.

Exact gradient descent on ``1/2 sum_i (z_i - zbar)^2 + gamma/2 sum_i |w_i - w_i^anchor|^2`` within
each pool (docs/method.md section 3), with the anchor = the weights at the start of the sleep:

    w_i <- w_i - eta [ mean_batch (z_i - zbar) x + gamma (w_i - w_i^anchor) ]

It runs on the pool deviations gathered once per sleep (``blocks``): the pool mean is exactly
conserved by this rule, and an iteration is two batched GEMMs per layer on the noise patch itself
(no noise image is ever built or unfolded); when a layer has more pooled filters than inputs the
sleep is instead run once on the d x d identity and applied at the end (``choose_solver``), which
is exact for this linear rule. Step sizes come from ``schedule`` (fan-in normalised
by default). Every ``check_every`` iterations the deviation is checked; if it is non-finite or has
grown, the layer is left as it was (its weight is only written at the end) and a
``SleepDivergenceWarning`` is raised.
"""
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, List, Optional

import torch
from torch import Tensor

from timm_lc.layers import LocallyConnected2d

from .blocks import PoolBlock, compute_dtype, gather_blocks, scatter_blocks_
from .pools import LayerPools
from .schedule import step_sizes
from timm_lc_settings.sleep import SOLVERS

# the deviation may exceed its start by this factor before it counts as growing
GROWTH_TOLERANCE = 1e-3


class SleepDivergenceWarning(RuntimeWarning):
    """A layer's sleep diverged (non-finite or growing deviation) and was rolled back."""


@dataclass
class SleepOutcome:
    """What happened to one layer during a noise-driven sleep."""
    steps: List[float]
    iterations_run: int = 0
    rolled_back: bool = False
    reason: Optional[str] = None
    trace: Optional[List[float]] = None
    extras: dict = field(default_factory=dict)


class HebbianRule:
    """The anti-Hebbian update of a block: ``D <- D - eta (D X X^T / B + gamma (D - D_anchor))``."""
    moves_mean = False

    def __call__(self, block: PoolBlock, x: Tensor, step: float, gamma: float,
                 anchor: Optional[Tensor], anchor_mean: Optional[Tensor]) -> None:
        z = torch.bmm(block.dev, x)  # (groups, rows, B): z_i - zbar for every member and sample
        block.dev.baddbmm_(z, x.transpose(1, 2), beta=1.0 - step * gamma, alpha=-step / x.shape[-1])
        if anchor is not None:
            block.dev.add_(anchor, alpha=step * gamma)

    def extras(self) -> dict:
        return {}


def draw_noise(layer: LocallyConnected2d, batch_size: int, generator: torch.Generator) -> Tensor:
    """One batch of k x k noise patches in noise coordinates: (groups, kh*kw*C_in/groups, B).

    Drawn as ``randn(B, C_in, kh, kw)`` (sample b's patch ``xi[b, c, a, a']`` is what pixel
    (y, x) of channel c holds when tiled: ``a = y mod kh``, ``a' = x mod kw``), then laid out as
    (group, slot, channel-in-group, sample). The noise is drawn in float32 whatever the weight's
    dtype (the same seed gives the same noise in every dtype) and returned in its ``compute_dtype``.
    """
    kh, kw = layer.kernel_size
    g = layer.groups
    xi = torch.randn(batch_size, layer.in_channels, kh, kw, generator=generator, device=layer.weight.device,
                     dtype=torch.float32).to(compute_dtype(layer.weight.dtype))
    xi = xi.view(batch_size, g, layer.in_channels // g, kh, kw).permute(1, 3, 4, 2, 0)
    return xi.reshape(g, kh * kw * (layer.in_channels // g), batch_size)


def identity_states(blocks: List[PoolBlock]) -> List[PoolBlock]:
    """The compose solver's states: each block's deviations replaced by the (groups, d, d) identity."""
    return [replace(b, dev=torch.eye(b.dev.shape[2], device=b.dev.device, dtype=b.dev.dtype)
                    .repeat(b.dev.shape[0], 1, 1)) for b in blocks]


def _sum_sq(tensors: List[Tensor]) -> float:
    """Sum of squares in fp64 (one host sync, no fp64 copy of the tensors)."""
    if not tensors:
        return 0.0
    return float(sum(torch.linalg.vector_norm(t, dtype=torch.float64).square() for t in tensors))


def _divergence(dev: float, mean: float, dev0: float, mean0: float) -> Optional[str]:
    if not (math.isfinite(dev) and math.isfinite(mean)):
        return "non-finite weights"
    if dev > dev0 * (1.0 + GROWTH_TOLERANCE) or mean > mean0 * (1.0 + GROWTH_TOLERANCE):
        return f"deviation grew to {math.sqrt(dev / dev0) if dev0 else float('inf'):.3g}x its start"
    return None


def choose_solver(solver: str, rule, trace: bool, blocks: List[PoolBlock], iterations: int, batch_size: int) -> str:
    """'iterate' (update the deviations D every step) or 'compose' (run the sleep on the identity).

    The Hebbian rule is linear in D with D's own start as anchor, so after any number of steps
    ``D_T = D_0 K_T``, where ``K_T`` is the same sleep (same noise, same steps) applied to the
    d x d identity. Composing costs ``2 d^2 B`` per step plus ``rows d^2`` once instead of
    ``2 rows d B`` per step: far cheaper whenever a layer has more pooled rows than its fan-in
    (e.g. every layer of the CIFAR ResNet-20 and the ImageNet stem). ``auto`` picks the cheaper
    one for the Hebbian rule (and 'iterate' for the rate circuit or when tracing every step).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if not isinstance(rule, HebbianRule) or trace:
        if solver == "compose":
            raise ValueError("solver='compose' needs the Hebbian rule and trace=False")
        return "iterate"
    if solver != "auto":
        return solver
    iterate = compose = 0
    for block in blocks:
        g, rows, d = block.dev.shape
        iterate += 2 * iterations * g * rows * d * batch_size
        compose += 2 * iterations * g * d * d * batch_size + g * rows * d * d
    return "compose" if compose < iterate else "iterate"


@dataclass(frozen=True)
class _Sleep:
    """One layer's sleep: the noise source and the rule applied to every state at each step."""
    layer: LocallyConnected2d
    steps: List[float]
    batch_size: int
    gamma: float
    generator: torch.Generator
    rule: Callable
    check_every: int


def _run_steps(sleep: _Sleep, states: List[PoolBlock], outcome: SleepOutcome,
               check: Callable[[], Optional[str]], trace_start: float = 0.0) -> Optional[str]:
    """Applies the rule to ``states`` at every step, anchored at their start; ``check()`` every
    ``check_every`` steps and after the last. Returns the first divergence reason, or None."""
    gamma, rule = sleep.gamma, sleep.rule
    anchors = [b.dev.clone() for b in states] if gamma > 0 else [None] * len(states)
    anchor_means = [b.mean.clone() for b in states] if gamma > 0 and rule.moves_mean else [None] * len(states)
    fixed = gamma / (1.0 + gamma)
    for t, step in enumerate(sleep.steps):
        noise = draw_noise(sleep.layer, sleep.batch_size, sleep.generator)
        for state, anchor, anchor_mean in zip(states, anchors, anchor_means):
            rule(state, state.inputs(noise), step, gamma, anchor, anchor_mean)
        outcome.iterations_run = t + 1
        if outcome.trace is not None:
            dist = math.sqrt(_sum_sq([b.dev - fixed * a if a is not None else b.dev
                                      for b, a in zip(states, anchors)]))
            outcome.trace.append(dist / trace_start if trace_start > 0 else 0.0)
        if (t + 1) % sleep.check_every == 0 or t + 1 == len(sleep.steps):
            reason = check()
            if reason is not None:
                return reason
    return None


def _sleep_iterate(sleep: _Sleep, blocks: List[PoolBlock], outcome: SleepOutcome) -> Optional[str]:
    """The 'iterate' solver: the rule updates the pooled deviations themselves at every step."""
    dev0 = _sum_sq([b.dev for b in blocks])
    mean0 = _sum_sq([b.mean for b in blocks])

    def check() -> Optional[str]:
        mean = _sum_sq([b.mean for b in blocks]) if sleep.rule.moves_mean else mean0
        return _divergence(_sum_sq([b.dev for b in blocks]), mean, dev0, mean0)

    trace_start = 0.0
    if outcome.trace is not None:
        trace_start = math.sqrt(dev0) * (1.0 - sleep.gamma / (1.0 + sleep.gamma))
    return _run_steps(sleep, blocks, outcome, check, trace_start)


def _sleep_compose(sleep: _Sleep, blocks: List[PoolBlock], outcome: SleepOutcome) -> Optional[str]:
    """The 'compose' solver: the sleep runs on the identity (its states become ``K_T``), then
    ``D_T = D_0 K_T``; non-finite values are checked on the way, growth once at the end."""
    dev0 = _sum_sq([b.dev for b in blocks])
    mean0 = _sum_sq([b.mean for b in blocks])
    states = identity_states(blocks)

    def check() -> Optional[str]:
        return None if all(bool(torch.isfinite(s.dev).all()) for s in states) else "non-finite weights"

    reason = _run_steps(sleep, states, outcome, check)
    if reason is not None:
        return reason
    for block, state in zip(blocks, states):
        block.dev = torch.bmm(block.dev, state.dev)
    return _divergence(_sum_sq([b.dev for b in blocks]), mean0, dev0, mean0)


def sleep_layer_(
        layer: LocallyConnected2d,
        pools: LayerPools,
        iterations: int,
        batch_size: int,
        gamma: float,
        generator: torch.Generator,
        lr: Optional[float] = None,
        schedule: str = "auto",
        check_every: int = 10,
        trace: bool = False,
        rule: Optional[Callable] = None,
        name: str = "",
        solver: str = "auto",
) -> SleepOutcome:
    """Runs ``iterations`` noise-driven plasticity steps on ``layer``'s pools, in place.

    A diverging layer (non-finite or growing deviation) is left as it was and a
    ``SleepDivergenceWarning`` is raised.

    Args:
        layer: the LC layer to sleep.
        pools: its pools (``find_pools``).
        iterations: plasticity steps.
        batch_size: noise patches per step.
        gamma: anchor strength.
        generator: the noise generator.
        lr: the step size (None: from ``schedule``, fan-in normalised).
        schedule: the step-size schedule (``schedule.step_sizes``).
        check_every: steps between divergence checks.
        trace: record, after every step, the distance of the deviations to the white-noise fixed
            point ``gamma/(1+gamma) D_anchor`` relative to its start.
        rule: the per-block update (``HebbianRule()`` by default; ``rate.RateRule`` simulates the
            lateral circuit).
        name: the layer's name in warnings.
        solver: 'auto', 'iterate' or 'compose' (see ``choose_solver``; both give the same result up
            to float rounding; 'compose' checks for growth once, at the end).

    Returns:
        The layer's :class:`SleepOutcome`.

    Raises:
        ValueError: an unknown solver, or 'compose' with a rule other than Hebbian or with ``trace``.
    """
    rule = HebbianRule() if rule is None else rule
    steps = step_sizes(iterations, layer.fan_in, batch_size, gamma, lr, schedule, pools.multiplicity)
    outcome = SleepOutcome(steps=steps)
    if not len(pools) or iterations == 0:
        return outcome
    blocks = gather_blocks(layer, pools)
    outcome.extras["solver"] = solver = choose_solver(solver, rule, trace, blocks, iterations, batch_size)
    if trace:
        outcome.trace = []
    sleep = _Sleep(layer, steps, batch_size, gamma, generator, rule, check_every)
    reason = (_sleep_compose if solver == "compose" else _sleep_iterate)(sleep, blocks, outcome)
    if reason is not None:
        outcome.rolled_back, outcome.reason = True, f"{reason} after {outcome.iterations_run} iterations"
        warnings.warn(
            f"sleep of layer {name or type(layer).__name__!r} (fan-in {layer.fan_in}) diverged: "
            f"{outcome.reason} with step {steps[outcome.iterations_run - 1]:.4g}; the layer was rolled back "
            f"to its weights before the sleep", SleepDivergenceWarning, stacklevel=3)
        return outcome
    scatter_blocks_(layer, blocks)
    outcome.extras.update(rule.extras())
    return outcome
