"""Sleep-phase weight sharing for LocallyConnected2d layers (docs/method.md sections 2-4).

``share_weights_`` shares filters within pools (instant, Hebbian or rate dynamics), with the
settings of one ``SleepConfig`` (the paper's: ``PAPER_SLEEP``);
``sharing_snr`` measures how shared they are; ``find_pools`` / ``pool_ids`` say who shares with whom.
``SleepConfig`` is defined in ``timm_lc_settings.sleep`` (torch-free, for the command line) and
re-exported here.
"""
from timm_lc_settings.sleep import MODES, PAPER_SLEEP, POOL_MODES, SleepConfig

from .api import share_weights_, share_with_
from .hebbian import SleepDivergenceWarning
from .metrics import sharing_snr
from .optimizer_state import pool_optimizer_state_
from .pools import LayerPools, find_pools, pool_ids
from .report import LayerReport, SharingReport
from .schedule import contraction_factor, max_stable_fan_in, optimal_step, step_sizes

__all__ = [
    "share_weights_", "share_with_", "SleepDivergenceWarning", "sharing_snr", "pool_optimizer_state_", "LayerPools", "find_pools",
    "pool_ids", "LayerReport", "SharingReport", "contraction_factor", "max_stable_fan_in", "optimal_step",
    "step_sizes", "MODES", "PAPER_SLEEP", "POOL_MODES", "SleepConfig",
]
