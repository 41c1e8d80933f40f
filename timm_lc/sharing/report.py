"""What a call to ``share_weights_`` did, per layer and in total (JSON-friendly via ``to_dict``)."""
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from .metrics import summarise


@dataclass
class LayerReport:
    """One layer: pools, step sizes, deviation / SNR before and after, divergence, wall time.

    ``deviation_*`` is the relative deviation of the pooled filters from their pool means, ``snr_*``
    the paper's per-pool SNR (see ``metrics``); None where the layer has no pool to share.
    ``lr`` / ``final_lr`` are the first and last step sizes; ``trace`` (on request) the distance to
    the white-noise fixed point after every iteration, relative to its start.
    """
    name: str
    fan_in: int
    pools: int
    shared_positions: int
    iterations: int
    deviation_before: Optional[float]
    deviation_after: Optional[float]
    snr_before: Optional[float]
    snr_after: Optional[float]
    wall_time: float
    lr: Optional[float] = None
    final_lr: Optional[float] = None
    rolled_back: bool = False
    reason: Optional[str] = None
    extras: Dict[str, Any] = field(default_factory=dict)
    trace: Optional[List[float]] = None
    # sums behind the aggregates (pooled entries / weights), not part of to_dict()
    _sums: Dict[str, float] = field(default_factory=dict, repr=False)


def _aggregate(layers: List[LayerReport], key: str) -> Dict[str, Optional[float]]:
    """SNR and deviation over all layers' pooled entries, ``key`` = "before" / "after" the sleep."""
    sums: Dict[str, float] = {name: sum(layer._sums.get(f"{name}_{key}", 0.0) for layer in layers)
                              for name in ("snr_sum", "dev_sq", "norm_sq")}
    sums["entries"] = sum(layer._sums.get("entries", 0) for layer in layers)
    return summarise(sums)


@dataclass
class SharingReport:
    """All layers of one ``share_weights_`` call plus the settings it ran with.

    ``loss_before`` / ``loss_after``: the training loss just before and just after the share, when
    the caller measured it (``SleepPhase`` with a probe); None otherwise.

    Args:
        mode: the sharing mode ('instant', 'hebbian' or 'rate').
        pools: the pool mode ('paper', 'residue' or 'full').
        iterations: sleep iterations asked for.
        batch_size: noise patches per iteration.
        gamma: anchor strength.
        seed: base seed of the noise.
        options: the mode's extra options.
        layers: one ``LayerReport`` per shared layer.
        loss_before: training loss just before the share, or None.
        loss_after: training loss just after the share, or None.
    """
    mode: str
    pools: str
    iterations: int
    batch_size: int
    gamma: float
    seed: int
    options: Dict[str, Any] = field(default_factory=dict)
    layers: List[LayerReport] = field(default_factory=list)
    loss_before: Optional[float] = None
    loss_after: Optional[float] = None

    @property
    def deviation_before(self) -> Optional[float]:
        """Relative deviation from the pool means over all pooled weights, before sharing."""
        return _aggregate(self.layers, "before")["deviation"]

    @property
    def deviation_after(self) -> Optional[float]:
        """Relative deviation from the pool means over all pooled weights, after sharing."""
        return _aggregate(self.layers, "after")["deviation"]

    @property
    def snr_before(self) -> Optional[float]:
        return _aggregate(self.layers, "before")["snr"]

    @property
    def snr(self) -> Optional[float]:
        """The paper's per-pool SNR after sharing, averaged over every pooled kernel entry."""
        return _aggregate(self.layers, "after")["snr"]

    @property
    def wall_time(self) -> float:
        return sum(layer.wall_time for layer in self.layers)

    @property
    def rolled_back(self) -> List[str]:
        """Names of the layers whose sleep diverged and was undone."""
        return [layer.name for layer in self.layers if layer.rolled_back]

    def to_dict(self) -> Dict[str, Any]:
        layers = []
        for layer in self.layers:
            entry = asdict(layer)
            entry.pop("_sums")
            if entry["trace"] is None:
                entry.pop("trace")
            layers.append(entry)
        return {
            "mode": self.mode, "pools": self.pools, "iterations": self.iterations, "batch_size": self.batch_size,
            "gamma": self.gamma, "seed": self.seed, "options": dict(self.options),
            "deviation_before": self.deviation_before, "deviation_after": self.deviation_after,
            "snr_before": self.snr_before, "snr": self.snr, "wall_time": self.wall_time,
            "rolled_back": self.rolled_back, "loss_before": self.loss_before, "loss_after": self.loss_after,
            "layers": layers,
        }
