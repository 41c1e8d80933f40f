"""Training with Accelerate: the ``SleepPhase`` hook, the loop behind ``timm-lc train``, data and recipes.

``TrainConfig`` and ``load_config`` are defined in ``timm_lc_settings.train`` (torch-free, so the
command line reads recipes without torch) and re-exported here.
"""
from timm_lc_settings.train import TrainConfig, load_config

from .loop import train
from .resolve import resolve_config, save_config
from .sleep_phase import SleepPhase

__all__ = ["SleepPhase", "TrainConfig", "load_config", "resolve_config", "save_config", "train"]
