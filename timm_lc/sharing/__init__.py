"""Sleep-phase weight sharing for LocallyConnected2d layers (docs/method.md sections 2-4).

``share_weights_`` shares filters within pools (instant, Hebbian or rate dynamics), with the
settings of one ``SleepConfig`` (the paper's: ``PAPER_SLEEP``);
``sharing_snr`` measures how shared they are; ``find_pools`` / ``pool_ids`` say who shares with whom.
"""
from .api import share_weights_, share_with_
from .hebbian import SleepDivergenceWarning
from .metrics import sharing_snr
from .pools import POOL_MODES, LayerPools, find_pools, pool_ids
from .report import LayerReport, SharingReport
from .schedule import contraction_factor, max_stable_fan_in, optimal_step, step_sizes
from .settings import MODES, PAPER_SLEEP, SleepConfig
