"""Training with Accelerate: the ``SleepPhase`` hook, the loop behind ``timm-lc train``, data and recipes.

The names are imported on first use (``config`` alone needs no torch: the CLI parser is built from it).
"""
from .._lazy import lazy_exports

_EXPORTS = {"SleepPhase": ".sleep_phase", "TrainConfig": ".config", "load_config": ".config", "train": ".loop"}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
