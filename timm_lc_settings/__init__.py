"""The settings schema of timm-lc: what a run, a sleep phase and the command line are configured with.

Its own top-level package, importing neither torch nor ``timm_lc``, because two layers need it:
the library (``timm_lc``, an eager import like timm's, so any ``timm_lc.*`` module loads torch)
re-exports ``TrainConfig``, ``SleepConfig`` and ``PAPER_SLEEP`` for users, and the command line
(``timm_lc_cli``) builds its parsers and checks a recipe's values from it before it imports the
library, so ``timm-lc --help``, usage errors and bad values answer without torch.
"""
from .openmp import SPIN_COUNT, SPIN_ENV
from .sleep import MODEL_SLEEP, MODES, PAPER_SLEEP, POOL_MODES, SleepConfig
from .train import TrainConfig, config_from_dict, load_config, read_yaml, valid_keys

__all__ = ["SPIN_COUNT", "SPIN_ENV", "MODEL_SLEEP", "MODES", "PAPER_SLEEP", "POOL_MODES", "SleepConfig",
           "TrainConfig", "config_from_dict", "load_config", "read_yaml", "valid_keys"]
