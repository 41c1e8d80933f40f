"""Training with Accelerate: the ``SleepPhase`` hook, the loop behind ``timm-lc train``, data and recipes."""
from .config import TrainConfig, load_config
from .sleep_phase import SleepPhase
from .loop import train

__all__ = ["SleepPhase", "TrainConfig", "load_config", "train"]
