"""``SleepConfig``: the one definition of the sleep-phase settings, validated once.

Model cfgs (``pretrained_cfg["sleep"]``, ``model.sleep_cfg``), ``SleepPhase``, the training
config's ``sleep_*`` keys and ``share_weights_`` all describe a sleep with these fields; the
paper's settings (docs/method.md section 3) are ``PAPER_SLEEP``. A config.json stores
``SleepConfig.to_dict()`` under ``pretrained_cfg["sleep"]``.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

__all__ = ["SleepConfig", "PAPER_SLEEP", "MODES", "POOL_MODES", "SOLVERS", "SCHEDULES", "NOISE_OPTIONS",
           "RATE_OPTIONS"]

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


@dataclass(frozen=True)
class SleepConfig:
    """How a sleep phase shares weights; raises on any invalid value when built.

    Args:
        every: optimiser steps between sleep phases.
        mode: ``"hebbian"`` (the paper's anti-Hebbian sleep), ``"instant"`` (pool means) or ``"rate"``.
        pools: ``"paper"``, ``"residue"`` or ``"full"`` (see ``timm_lc.sharing.find_pools``).
        iterations, batch_size, gamma: Hebbian iterations, noise patches per iteration, anchor strength.
        lr: Hebbian step size; None is the fan-in normalised step.
        options: further ``share_weights_`` options: ``schedule``, ``check_every``, ``trace``, ``solver``
            (noise modes) and the rate dynamics' ``alpha``, ``tau``, ``b``, ``dt``, ``steps``, ``tol``.
    """
    every: int = 10
    mode: str = "hebbian"
    pools: str = "paper"
    iterations: int = 100
    batch_size: int = 128
    gamma: float = 1e-5
    lr: Optional[float] = None
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
            from .rate import RateRule  # the rule validates its own options (imports torch)
            RateRule(**self.rate_options)
        object.__setattr__(self, "gamma", float(self.gamma))
        object.__setattr__(self, "options", options)

    @property
    def rate_options(self) -> Dict[str, Any]:
        """The rate dynamics' options (``RateRule`` arguments)."""
        return {k: v for k, v in self.options.items() if k in RATE_OPTIONS}

    def to_dict(self) -> Dict[str, Any]:
        """The flat dict of a config.json / ``model.sleep_cfg``: the fields, then the options."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        return {**fields, **self.options}

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> "SleepConfig":
        """The inverse of ``to_dict``: named fields are fields, any other key an option."""
        names = {f.name for f in dataclasses.fields(cls)} - {"options"}
        return cls(**{k: v for k, v in settings.items() if k in names},
                   options={k: v for k, v in settings.items() if k not in names})

    def replace(self, **overrides: Any) -> "SleepConfig":
        """A copy with ``overrides`` applied (a ``None`` override keeps the value), validated again."""
        return SleepConfig.from_dict({**self.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})


PAPER_SLEEP = SleepConfig()  # every 10 optimiser steps, 100 Hebbian iterations on 128 noise patches, paper pools
