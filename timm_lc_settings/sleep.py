"""``SleepConfig``: the one definition of the sleep-phase settings, validated once (no torch).

Model cfgs (``pretrained_cfg["sleep"]``, ``model.sleep_cfg``), ``SleepPhase``, the training
config's ``sleep_*`` keys and ``share_weights_`` all describe a sleep with these fields; the
paper's settings (docs/method.md section 3) are ``PAPER_SLEEP``. A config.json stores
``SleepConfig.to_dict()`` under ``pretrained_cfg["sleep"]``.
"""
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

__all__ = ["SleepConfig", "PAPER_SLEEP", "MODEL_SLEEP", "MODES", "POOL_MODES", "SOLVERS", "SCHEDULES",
           "NOISE_OPTIONS", "RATE_OPTIONS", "euler_contraction", "rate_dynamics"]

# the choices, here so that the settings (and the CLI built on them) import without torch
MODES = ("instant", "hebbian", "rate")
POOL_MODES = ("paper", "residue", "full")  # see pools.find_pools
SOLVERS = ("auto", "iterate", "compose")  # see hebbian.choose_solver
SCHEDULES = ("auto", "constant")  # see schedule.step_sizes
NOISE_OPTIONS = ("schedule", "check_every", "trace", "solver")  # Hebbian and rate modes
RATE_OPTIONS = ("alpha", "tau", "b", "dt", "steps", "tol")  # rate mode only (``RateRule``)


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def euler_contraction(alpha: float, step: float) -> float:
    """Per-step contraction of the rate circuit's Euler iteration (``step = dt / tau``): its spectral radius.

    Args:
        alpha: inhibition strength.
        step: ``dt / tau``.

    Returns:
        The spectral radius of one Euler step.
    """
    mean_mode = math.sqrt((1.0 - step) ** 2 + step * step * alpha)  # eigenvalues -1 +- i sqrt(alpha)
    return max(abs(1.0 - step), mean_mode)


def rate_dynamics(alpha: float = 10.0, tau: float = 1.0, b: float = 1.0, dt: Optional[float] = None,
                  steps: Optional[int] = None, tol: float = 1e-4) -> Dict[str, Any]:
    """The rate dynamics' settings (``timm_lc.sharing.rate.RateRule``), checked and resolved.

    Args:
        alpha: inhibition strength (>= 0).
        tau: time constant (> 0).
        b: baseline rate.
        dt: Euler step; None: ``tau / (1 + alpha)``, the fastest damping.
        steps: Euler steps; None: enough to settle to ``tol``.
        tol: relative settling tolerance, in (0, 1).

    Returns:
        ``alpha``, ``tau``, ``b``, ``dt`` (floats) and ``steps`` (int).

    Raises:
        ValueError: a value out of range, or a ``dt`` for which explicit Euler is unstable.
    """
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    dt = tau / (1.0 + alpha) if dt is None else float(dt)
    if not 0 < dt < 2.0 * tau / (1.0 + alpha):
        raise ValueError(f"dt must be in (0, 2 tau / (1 + alpha)) = (0, {2.0 * tau / (1.0 + alpha):.4g}) for a "
                         f"stable explicit Euler integration, got {dt}")
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol}")
    if steps is None:
        steps = max(1, math.ceil(math.log(tol) / math.log(euler_contraction(alpha, dt / tau))))
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return {"alpha": float(alpha), "tau": float(tau), "b": float(b), "dt": dt, "steps": int(steps)}


@dataclass(frozen=True)
class SleepConfig:
    """How a sleep phase shares weights; raises on any invalid value when built.

    Args:
        every: optimiser steps between sleep phases.
        mode: ``"hebbian"`` (the paper's anti-Hebbian sleep), ``"instant"`` (pool means) or ``"rate"``.
        pools: ``"paper"``, ``"residue"`` or ``"full"`` (see ``timm_lc.sharing.find_pools``).
        iterations, batch_size, gamma: Hebbian iterations, noise patches per iteration, anchor strength.
        lr: Hebbian step size; None is the fan-in normalised step.
        pool_optimizer_state: also average, at every share, each optimiser state tensor shaped like an LC
            weight (Adam's moments, SGD's momentum buffer) over the same pools (docs/method.md section 3).
        options: further ``share_weights_`` options: ``schedule``, ``check_every``, ``trace``, ``solver``
            (noise modes) and the rate dynamics' ``alpha``, ``tau``, ``b``, ``dt``, ``steps``, ``tol``.

    Raises:
        ValueError: if a field or option has an invalid value.
        TypeError: if ``options`` holds a key that does not belong to ``mode``.
    """
    every: int = 10
    mode: str = "hebbian"
    pools: str = "paper"
    iterations: int = 100
    batch_size: int = 128
    gamma: float = 1e-5
    lr: Optional[float] = None
    pool_optimizer_state: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.pools not in POOL_MODES:
            raise ValueError(f"pools must be one of {POOL_MODES}, got {self.pools!r}")
        for name in ("every", "iterations", "batch_size"):
            if not _is_int(getattr(self, name), 1):
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not (_is_number(self.gamma) and self.gamma >= 0):
            raise ValueError(f"gamma must be a number >= 0, got {self.gamma!r}")
        if self.lr is not None and not (_is_number(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be None (fan-in normalised) or a number > 0, got {self.lr!r}")
        if not isinstance(self.pool_optimizer_state, bool):
            raise ValueError(f"pool_optimizer_state must be True or False, got {self.pool_optimizer_state!r}")
        options = dict(self.options)
        allowed = set() if self.mode == "instant" else set(NOISE_OPTIONS) | (
            set(RATE_OPTIONS) if self.mode == "rate" else set())
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise TypeError(f"unexpected option(s) {unknown} for mode {self.mode!r}; "
                            f"expected a subset of {sorted(allowed)}")
        if options.get("schedule", "auto") not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {options['schedule']!r}")
        if options.get("solver", "auto") not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {options['solver']!r}")
        if not _is_int(options.get("check_every", 10), 1):
            raise ValueError(f"check_every must be an int >= 1, got {options['check_every']!r}")
        if self.mode == "rate":
            rate_dynamics(**self.rate_options)
        object.__setattr__(self, "gamma", float(self.gamma))
        object.__setattr__(self, "options", options)

    @property
    def rate_options(self) -> Dict[str, Any]:
        """The rate dynamics' options (``RateRule`` arguments)."""
        return {k: v for k, v in self.options.items() if k in RATE_OPTIONS}

    def to_dict(self) -> Dict[str, Any]:
        """The flat dict of a config.json / ``model.sleep_cfg``: the fields, then the options.

        Returns:
            A new dict of every field but ``options``, followed by the options' keys.
        """
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        return {**fields, **self.options}

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> "SleepConfig":
        """The inverse of ``to_dict``: named fields are fields, any other key an option.

        Args:
            settings: a flat dict such as ``to_dict()`` returns (missing fields take their defaults).

        Returns:
            The validated ``SleepConfig``.
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"options"}
        return cls(**{k: v for k, v in settings.items() if k in names},
                   options={k: v for k, v in settings.items() if k not in names})

    def replace(self, **overrides: Any) -> "SleepConfig":
        """A copy with ``overrides`` applied (a ``None`` override keeps the value), validated again.

        Args:
            **overrides: field or option values by name.

        Returns:
            The new ``SleepConfig``.
        """
        return SleepConfig.from_dict({**self.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})


PAPER_SLEEP = SleepConfig()  # every 10 optimiser steps, 100 Hebbian iterations on 128 noise patches, paper pools

# The sleep settings each registered model carries (``pretrained_cfg["sleep"]``, ``model.sleep_cfg``); a
# model not named here carries none. ``timm_lc.models`` builds its cfgs from this table, and the training
# config resolves a run's sleep from it without building (or importing) the model.
MODEL_SLEEP: Dict[str, SleepConfig] = {name: PAPER_SLEEP for name in (
    "lc_resnet18_hebb", "lc_resnet18_half_hebb", "lc_resnet20_hebb", "lc_resnet20_tin_hebb", "lc_resnet_tiny_hebb")}
