"""Step sizes of the Hebbian sleep, from the expected contraction of the deviation (docs/method.md 3).

One update on a pool's deviations D (filters minus pool mean) with B white-noise samples
``A = X X^T / B`` (d = fan-in) is ``D <- D (I - eta A) - eta gamma (D - D_anchor)``. With
``E[A] = I`` and ``E[A^2] = (1 + (d+1)/B) I`` (Gaussian noise), the squared distance to the fixed
point ``D* = gamma/(1+gamma) D_anchor`` shrinks in expectation by

    f(eta) = (1 - eta (1 + gamma))^2 + eta^2 (d+1)/B      (~ 1 - 2 eta + eta^2 (1 + (d+1)/B))

per step, plus an additive term ``eta^2 |D*|^2 (d+1)/B`` from the noise around the fixed point.
``f`` is smallest at ``eta* = (1+gamma) / ((1+gamma)^2 + (d+1)/B)`` (~ ``1 / (1 + (d+1)/B)``): the
fan-in normalised step. It never diverges (``f(eta*) < 1`` for every d), whereas a fixed step
diverges once ``f >= 1``, e.g. eta = 0.1 with B = 128 above d = 2431 (``max_stable_fan_in``).

The ``auto`` schedule keeps the optimal constant step while the deviation is far above the noise
floor that a constant step leaves around D*, then decays like ``2 / ((1 + gamma) t)`` (Robbins-Monro)
so the iterate converges to D* itself instead of fluctuating around it.
"""
import math
from typing import List, Optional
from timm_lc_settings.sleep import SCHEDULES



def optimal_step(fan_in: int, batch_size: int, gamma: float = 0.0, multiplicity: int = 1) -> float:
    """The step minimising the expected contraction factor ``f`` (see module docstring).

    ``multiplicity`` > 1 (several kernel offsets reading the same noise pixel, from a dilation
    sharing a factor with the kernel) scales the input covariance's top eigenvalue; the step is
    divided by it to stay stable.
    """
    g = 1.0 + gamma
    return g / (g * g + (fan_in + 1) / batch_size) / multiplicity


def contraction_factor(step: float, fan_in: int, batch_size: int, gamma: float = 0.0) -> float:
    """Expected factor on the squared distance to the fixed point after one step of size ``step``."""
    return (1.0 - step * (1.0 + gamma)) ** 2 + step * step * (fan_in + 1) / batch_size


def max_stable_fan_in(step: float, batch_size: int) -> float:
    """Largest fan-in for which a fixed step (gamma = 0) still contracts: ``B (2/eta - 1) - 1``."""
    return batch_size * (2.0 / step - 1.0) - 1.0


def step_sizes(
        iterations: int,
        fan_in: int,
        batch_size: int,
        gamma: float = 0.0,
        lr: Optional[float] = None,
        schedule: str = "auto",
        multiplicity: int = 1,
) -> List[float]:
    """The step of every sleep iteration.

    ``lr=None`` starts from the fan-in normalised ``optimal_step``; a float is used as the raw
    step (the reference's rule is ``lr=0.1, schedule='constant'``, which diverges for large fan-in).
    ``schedule='auto'`` switches to the decaying phase once the expected squared distance to the
    fixed point has reached the constant step's noise floor (never, if gamma = 0: the fixed point
    is then exact and the constant step converges geometrically).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    eta = optimal_step(fan_in, batch_size, gamma, multiplicity) if lr is None else float(lr)
    if schedule == "constant" or gamma <= 0.0:
        return [eta] * iterations
    f = contraction_factor(eta, fan_in, batch_size, gamma)
    if not 0.0 < f < 1.0:
        return [eta] * iterations  # no contraction: decaying would only hide the divergence
    # squared distance to D* starts at |D*|^2 / gamma^2; the floor is eta^2 (d+1)/B |D*|^2 / (1 - f)
    floor = eta * eta * (fan_in + 1) / batch_size / (1.0 - f) * gamma * gamma
    switch = 0 if floor >= 1.0 else math.ceil(math.log(floor) / math.log(f))
    decay = 0.5 * (1.0 + gamma)
    return [eta if t < switch else eta / (1.0 + eta * decay * (t - switch)) for t in range(iterations)]
