"""``share_weights_``: weight sharing for every LocallyConnected2d of a model, in place."""
import time
from contextlib import nullcontext
from typing import Collection, Optional

import torch
from torch import nn

from .hebbian import HebbianRule, sleep_layer_
from .instant import instant_share_
from .metrics import lc_layers, pool_statistics, summarise
from .optimizer_state import pool_optimizer_state_
from .pools import find_pools
from .rate import RateRule
from .report import LayerReport, SharingReport
from timm_lc_settings.sleep import MODES, SleepConfig

__all__ = ["MODES", "share_weights_", "share_with_"]


def share_weights_(
        module: nn.Module,
        mode: str = "instant",
        pools: str = "paper",
        iterations: int = 100,
        batch_size: int = 128,
        gamma: float = 1e-5,
        lr: Optional[float] = None,
        seed: int = 0,
        layers: Optional[Collection[str]] = None,
        optimizer: Optional[torch.optim.Optimizer] = None,
        **mode_options,
) -> SharingReport:
    """Shares the filters of every LocallyConnected2d in ``module`` (or ``module`` itself), in place.

    Modes (docs/method.md section 3): ``instant`` sets every pooled filter to its pool mean;
    ``hebbian`` runs ``iterations`` anti-Hebbian steps on ``batch_size`` tiled k x k Gaussian noise
    patches, anchored to the starting weights with ``gamma``; ``rate`` simulates the lateral
    circuit (options ``alpha``, ``tau``, ``b``, ``dt``, ``steps``, ``tol``; see ``rate``). ``pools``
    is ``paper`` (residue classes of the positions that see the tiled noise, border positions
    alone: the reference's Hebbian pools), ``residue`` (output positions grouped by
    ``(h mod kh, w mod kw)``, borders included: the reference's instant sharing, behind the paper's
    network results) or ``full`` (all positions of a channel: a convolution). ``lr=None`` uses the fan-in
    normalised step with the ``auto`` decay (never diverges); a float is a raw fixed step size.
    Noise-mode options: ``schedule`` ('auto' | 'constant'), ``check_every`` (divergence check period,
    10), ``trace`` (record the per-iteration convergence, False), ``solver`` ('auto' | 'iterate' |
    'compose': update the deviations every step, or run the sleep once on the d x d identity and
    apply it at the end, exact for the Hebbian rule and much cheaper when a layer has more pooled
    filters than inputs; 'auto' picks the cheaper).

    Computes in float64 for float64 weights and float32 otherwise (autocast off) and writes back in
    each weight's dtype, under no_grad; bias, gradients and optimiser state are untouched. The i-th
    LC layer of ``module`` draws its noise
    from its own ``torch.Generator`` on the weight's device seeded with ``seed + i``: the same seed
    gives bitwise the same result whichever subset of layers is shared (so processes can split a
    sleep), and the global RNG is not used. A layer whose sleep diverges is rolled back with a
    ``SleepDivergenceWarning``.

    Args:
        module: a model, or a single LocallyConnected2d.
        mode: 'instant', 'hebbian' or 'rate'.
        pools: 'paper', 'residue' or 'full'.
        iterations: number of sleep iterations (noise modes).
        batch_size: number of noise patches per iteration (noise modes).
        gamma: strength of the anchor to the starting weights (noise modes).
        lr: None for the fan-in normalised step with ``auto`` decay, or a raw fixed step size.
        seed: base seed; the i-th LC layer draws its noise with ``seed + i``.
        layers: names (as in ``named_modules``) of the LC layers to share; None shares all. The
            others are left untouched and out of the report.
        optimizer: when given, the optimiser state it keeps for each shared layer's weight (every
            state tensor shaped like the weight: Adam's moments, SGD's momentum buffer) is averaged
            over the same pools as the weights (``SleepConfig.pool_optimizer_state``).
        **mode_options: the mode's options listed above (``schedule``, ``check_every``, ``trace``,
            ``solver``; ``alpha``, ``tau``, ``b``, ``dt``, ``steps``, ``tol`` for ``rate``).

    Returns:
        A ``SharingReport`` with the settings and one ``LayerReport`` per shared layer.

    Raises:
        TypeError: if ``seed`` is not an int, ``module`` is not an ``nn.Module``, or an option
            does not belong to ``mode``.
        ValueError: if a setting or option is invalid, or ``layers`` names a module that is not an
            LC layer of ``module``. Settings are checked before any layer changes.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    settings = SleepConfig(mode=mode, pools=pools, iterations=iterations, batch_size=batch_size, gamma=gamma,
                           lr=lr, pool_optimizer_state=optimizer is not None,
                           options=mode_options)  # validated before touching any layer
    report = share_with_(module, settings, seed=seed, layers=layers)
    if optimizer is not None:
        pool_optimizer_state_(optimizer, module, pools, layers=layers)
    return report


def share_with_(module: nn.Module, settings: SleepConfig, seed: int = 0,
                layers: Optional[Collection[str]] = None) -> SharingReport:
    """``share_weights_`` with its settings as one ``SleepConfig``, in place.

    ``settings.every`` and ``settings.pool_optimizer_state`` are not used here: the caller pools the
    optimiser state.

    Args:
        module: a model, or a single LocallyConnected2d.
        settings: the sleep settings (mode, pools, iterations, batch size, gamma, lr, options).
        seed: base seed; the i-th LC layer draws its noise with ``seed + i``.
        layers: names (as in ``named_modules``) of the LC layers to share; None shares all.

    Returns:
        A ``SharingReport`` with the settings and one ``LayerReport`` per shared layer.

    Raises:
        ValueError: if ``layers`` names a module that is not an LC layer of ``module`` (checked before
            any layer changes).
    """
    mode, pools, options = settings.mode, settings.pools, dict(settings.options)
    iterations, batch_size, gamma, lr = settings.iterations, settings.batch_size, settings.gamma, settings.lr
    rate_options = settings.rate_options
    report = SharingReport(mode, pools, iterations, batch_size, gamma, seed, options)
    all_layers = lc_layers(module)
    if layers is not None:
        unknown = sorted(set(layers) - {name for name, _ in all_layers})
        if unknown:
            raise ValueError(f"layers {unknown} are not LocallyConnected2d layers of the module")
    for index, (name, layer) in enumerate(all_layers):
        if layers is not None and name not in layers:
            continue
        start = time.perf_counter()
        device = layer.weight.device
        layer_pools = find_pools(layer, pools)
        before = pool_statistics(layer, layer_pools)
        autocast = torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda") else nullcontext()
        with torch.no_grad(), autocast:
            outcome = None
            if mode == "instant":
                instant_share_(layer, layer_pools)
            else:
                generator = torch.Generator(device=device)
                generator.manual_seed(seed + index)
                rule = RateRule(**rate_options) if mode == "rate" else HebbianRule()
                outcome = sleep_layer_(
                    layer, layer_pools, iterations, batch_size, gamma, generator, lr=lr,
                    schedule=options.get("schedule", "auto"), check_every=options.get("check_every", 10),
                    trace=bool(options.get("trace", False)), rule=rule, name=name,
                    solver=options.get("solver", "auto"))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        after = pool_statistics(layer, layer_pools)
        layer_report = LayerReport(
            name=name, fan_in=layer.fan_in, pools=len(layer_pools), shared_positions=layer_pools.num_shared,
            iterations=0 if outcome is None else outcome.iterations_run,
            deviation_before=summarise(before)["deviation"], deviation_after=summarise(after)["deviation"],
            snr_before=summarise(before)["snr"], snr_after=summarise(after)["snr"],
            wall_time=time.perf_counter() - start)
        if outcome is not None:
            layer_report.lr = outcome.steps[0] if outcome.steps else None
            layer_report.final_lr = outcome.steps[-1] if outcome.steps else None
            layer_report.rolled_back, layer_report.reason = outcome.rolled_back, outcome.reason
            layer_report.extras, layer_report.trace = outcome.extras, outcome.trace
        layer_report._sums = {"entries": before["entries"],
                              **{f"{k}_before": before[k] for k in ("snr_sum", "dev_sq", "norm_sq")},
                              **{f"{k}_after": after[k] for k in ("snr_sum", "dev_sq", "norm_sq")}}
        report.layers.append(layer_report)
    return report

