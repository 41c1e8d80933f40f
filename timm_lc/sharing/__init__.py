"""Sleep-phase weight sharing for LocallyConnected2d layers (docs/method.md sections 2-4).

``share_weights_`` shares filters within pools (instant, Hebbian or rate dynamics), with the
settings of one ``SleepConfig`` (the paper's: ``PAPER_SLEEP``);
``sharing_snr`` measures how shared they are; ``find_pools`` / ``pool_ids`` say who shares with whom.
The names are imported on first use (``settings`` alone needs no torch).
"""
from .._lazy import lazy_exports

_EXPORTS = {
    "share_weights_": ".api", "share_with_": ".api", "SleepDivergenceWarning": ".hebbian",
    "sharing_snr": ".metrics", "LayerPools": ".pools", "pool_optimizer_state_": ".optimizer_state", "find_pools": ".pools", "pool_ids": ".pools",
    "LayerReport": ".report", "SharingReport": ".report", "contraction_factor": ".schedule",
    "max_stable_fan_in": ".schedule", "optimal_step": ".schedule", "step_sizes": ".schedule",
    "MODES": ".settings", "PAPER_SLEEP": ".settings", "POOL_MODES": ".settings", "SleepConfig": ".settings",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
