"""``timm-lc sleep-convergence``: Hebbian sleep convergence vs fan-in, measured against theory.

For several fan-ins d = 9 C_in (3 x 3 kernels) it runs one sleep on a small LC layer (6 x 6
outputs, nine pools of four) and plots the distance of the pool deviations to the white-noise
fixed point, relative to its start, after every iteration: once with the fan-in normalised step of
``timm_lc.sharing`` and once with the reference's fixed step 0.1, each next to the expected value
from ``schedule`` (``v <- f(eta) v + eta^2 gamma^2 (d+1)/B``). The fixed step stalls near d = 2431
and diverges above it (that run is rolled back; its curve shows what would have happened).
"""
import argparse
import math
import os
import warnings
from typing import Dict, List, Optional, Sequence

import torch

from timm_lc.layers import LocallyConnected2d

from .._io import atomic_path
from .api import share_weights_
from .hebbian import SleepDivergenceWarning
from .schedule import contraction_factor, step_sizes

REFERENCE_STEP = 0.1


def expected_trace(steps: Sequence[float], fan_in: int, batch_size: int, gamma: float) -> List[float]:
    """Expected relative distance to the white-noise fixed point after every step (root of E|.|^2)."""
    v, out = 1.0, []
    for eta in steps:
        v = v * contraction_factor(eta, fan_in, batch_size, gamma) + eta * eta * gamma * gamma * (fan_in + 1) / batch_size
        out.append(math.sqrt(v))
    return out


def measure(in_channels: int, iterations: int, batch_size: int, gamma: float, seed: int,
            lr: Optional[float]) -> Dict[str, object]:
    """One sleep on a (in_channels -> 2, 3 x 3, 8 x 8 input) layer; its trace and the theory."""
    torch.manual_seed(seed)
    layer = LocallyConnected2d(in_channels, 2, 3, (8, 8), bias=False)
    options = dict(schedule="constant", check_every=iterations) if lr is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SleepDivergenceWarning)
        report = share_weights_(layer, "hebbian", iterations=iterations, batch_size=batch_size, gamma=gamma,
                                lr=lr, seed=seed, trace=True, **options)
    steps = step_sizes(iterations, layer.fan_in, batch_size, gamma, lr, "constant" if lr is not None else "auto")
    return {"fan_in": layer.fan_in, "measured": report.layers[0].trace,
            "expected": expected_trace(steps, layer.fan_in, batch_size, gamma),
            "rolled_back": report.layers[0].rolled_back}


def plot(results: Dict[str, List[Dict[str, object]]], iterations: int, batch_size: int, gamma: float,
         output: str) -> None:
    """Writes the two-panel figure to ``output`` atomically (temporary file, then rename)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    titles = {"normalised": "fan-in normalised step (timm-lc)",
              "reference": f"fixed step {REFERENCE_STEP} (reference)"}
    colors = plt.cm.viridis([i / max(1, len(results["normalised"]) - 1) * 0.9 for i in range(len(results["normalised"]))])
    t = list(range(iterations + 1))
    for ax, key in zip(axes, ("normalised", "reference")):
        for color, run in zip(colors, results[key]):
            label = f"d = {run['fan_in']}" + (" (diverged: rolled back)" if run["rolled_back"] else "")
            ax.semilogy(t, [1.0] + run["measured"], color=color, lw=2.2, label=label)
            ax.semilogy(t, [1.0] + run["expected"], color="black", lw=0.9, ls=(0, (3, 3)), alpha=0.8, zorder=3)
        ax.legend(fontsize=8, loc="lower left")
        ax.set_title(titles[key])
        ax.set_xlabel("sleep iteration")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel(r"$|D_t - D^*| \,/\, |D_0 - D^*|$")
    axes[0].plot([], [], color="black", lw=0.9, ls=(0, (3, 3)), label="expected (theory)")
    axes[0].legend(fontsize=8, loc="lower left")
    axes[1].set_ylim(bottom=max(1e-7, axes[1].get_ylim()[0]))
    fig.suptitle(f"Hebbian sleep convergence on white noise (B = {batch_size}, gamma = {gamma:g})")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    try:
        with atomic_path(output) as tmp:
            fig.savefig(tmp, format="png", dpi=130)
    finally:
        plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="timm-lc sleep-convergence",
        description="Plot the deviation of Hebbian sleep vs iteration for several fan-ins, against theory.")
    parser.add_argument("--output", default=os.path.join("docs", "sleep_convergence.png"), help="PNG to write")
    parser.add_argument("--in-channels", type=int, nargs="+", default=[3, 16, 64, 256, 512],
                        help="input channels of the 3x3 layers (fan-in = 9 x this)")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--gamma", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.batch_size < 1 or min(args.in_channels) < 1:
        parser.error("--iterations, --batch-size and --in-channels must be positive")
    results = {key: [measure(c, args.iterations, args.batch_size, args.gamma, args.seed, lr)
                     for c in args.in_channels]
               for key, lr in (("normalised", None), ("reference", REFERENCE_STEP))}
    print(f"{'fan-in':>7} | {'normalised: measured':>20} {'theory':>9} | {'fixed 0.1: measured':>19} {'theory':>9}")
    for ours, ref in zip(results["normalised"], results["reference"]):
        print(f"{ours['fan_in']:>7} | {ours['measured'][-1]:>20.3g} {ours['expected'][-1]:>9.3g} | "
              f"{ref['measured'][-1]:>19.3g} {ref['expected'][-1]:>9.3g}")
    plot(results, args.iterations, args.batch_size, args.gamma, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
