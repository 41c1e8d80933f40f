"""Every figure timm-lc draws (matplotlib, Agg backend), each saved atomically by ``save_figure``.

Run plots (accuracy and sharing SNR over training), the replication study's bar chart and the
sleep-convergence figure. Library modules call these; none of them imports matplotlib itself.
"""
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from ._io import PathLike, atomic_path
from .run_dir import read_metrics

__all__ = ["save_figure", "plot_metrics", "plot_replication", "plot_sleep_convergence"]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig: Any, path: PathLike, **savefig_kwargs: Any) -> Path:
    """Writes ``fig`` to ``path`` atomically (temporary file, then rename) and closes it.

    The figure is closed even when saving fails; ``path`` is then left as it was.

    Args:
        fig: the matplotlib figure.
        path: where to write it.
        **savefig_kwargs: passed to ``fig.savefig`` (``dpi``, ``format``, ``bbox_inches``, ...).

    Returns:
        ``path``, as a ``Path``.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, **savefig_kwargs)
    finally:
        _pyplot().close(fig)
    return path


def _series(records: List[Dict[str, Any]], event: str, key: str):
    pts = [(r["step"], r[key]) for r in records if r.get("event") == event and r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _series_plot(plt: Any, series: Sequence[Any], ylabel: str, title: str, path: Path) -> Path:
    """Points of each (label, steps, values) against the optimiser step; log scale over > 2 decades."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, x, y in series:
        ax.plot(x, y, ".", markersize=3, label=label)
    positive = [v for _, _, y in series for v in y if v and v > 0]
    if positive and max(positive) / min(positive) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    return path


def plot_metrics(metrics_path: PathLike, out_dir: PathLike, title: Optional[str] = None) -> List[Path]:
    """Writes ``accuracy.png`` (test/train accuracy vs step), ``snr.png`` (sharing SNR: just before and
    after each share if the run slept, else at evaluation) and, if shares were probed,
    ``sharing_loss.png`` (the training loss just before and just after each share).

    Args:
        metrics_path: the run's metrics.jsonl.
        out_dir: the directory to write the plots into (created if missing).
        title: the plots' title (None: one per plot).

    Returns:
        The paths written: always ``accuracy.png``, the others only when the metrics hold their series.
    """
    plt = _pyplot()
    records = read_metrics(metrics_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for event, key, label in (("eval", "test_acc", "test"), ("eval", "ema_test_acc", "test (EMA)"),
                              ("eval", "train_acc", "train (running)")):
        x, y = _series(records, event, key)
        if x:
            ax.plot(x, y, marker="o", markersize=3, label=label)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "accuracy")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    save_figure(fig, out_dir / "accuracy.png", dpi=110, bbox_inches="tight")
    written.append(out_dir / "accuracy.png")

    snr_series = [("just before each share", *_series(records, "sleep", "snr_before")),
                  ("just after each share", *_series(records, "sleep", "snr"))]
    if not snr_series[0][1]:  # a run without sleep: the SNR at evaluation
        snr_series = [("at evaluation", *_series(records, "eval", "snr"))]
    if snr_series[0][1]:
        written.append(_series_plot(plt, snr_series, "sharing SNR (pool mean^2 / pool variance)",
                                    title or "weight sharing SNR", out_dir / "snr.png"))
    loss_series = [("just before each share", *_series(records, "sleep", "loss_before")),
                   ("just after each share", *_series(records, "sleep", "loss_after"))]
    if loss_series[0][1]:  # the sawtooth: the training loss just before and just after each share
        written.append(_series_plot(plt, loss_series, "training loss (probe batch)",
                                    title or "training loss around each share", out_dir / "sharing_loss.png"))
    return written


def plot_replication(results: Dict[str, Any], path: Path, title: str, sharing_variants: Sequence[str]) -> None:
    """A replication study's bar chart: mean test accuracy (and std) per variant, every seed a dot.

    Args:
        results: the study's results (``summary`` per variant and ``runs`` with their ``test_acc``).
        path: where to write the PNG.
        title: the chart's title.
        sharing_variants: the variants drawn in the sharing colour (conv and the others have their own).
    """
    plt = _pyplot()
    summary = results["summary"]
    variants = list(summary)
    fig, ax = plt.subplots(figsize=(1.2 * len(variants) + 2, 4))
    means = [summary[v]["mean"] for v in variants]
    stds = [summary[v]["std"] for v in variants]
    colours = ["tab:blue" if v == "conv" else "tab:green" if v in sharing_variants else "tab:orange"
               for v in variants]
    ax.bar(range(len(variants)), means, yerr=stds, capsize=4, color=colours, alpha=0.7)
    for i, v in enumerate(variants):
        accs = [r["test_acc"] for r in results["runs"] if r["variant"] == v]
        ax.scatter([i] * len(accs), accs, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
    ax.axhline(10.0, color="grey", linestyle=":", linewidth=1, label="chance (10 classes)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    low = min(m - s for m, s in zip(means, stds))
    ax.set_ylim(max(0.0, 10 * math.floor(low / 10) - 10), 100)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def plot_sleep_convergence(results: Dict[str, List[Dict[str, object]]], iterations: int, batch_size: int,
                           gamma: float, output: Union[str, Path], reference_step: float) -> None:
    """The sleep-convergence figure (measured vs expected, normalised and fixed step) written to ``output``.

    Args:
        results: under ``normalised`` and ``reference``, one run per fan-in: ``fan_in``, ``rolled_back`` and
            the ``measured`` and ``expected`` deviation from the fixed point (relative to its start) after
            each iteration.
        iterations: the number of sleep iterations (the x axis).
        batch_size: the noise samples per iteration, for the title.
        gamma: the anchor strength, for the title.
        output: where to write the PNG (its directory is created if missing).
        reference_step: the fixed step size of the ``reference`` panel, for its title.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    titles = {"normalised": "fan-in normalised step (timm-lc)",
              "reference": f"fixed step {reference_step} (reference)"}
    count = len(results["normalised"])
    colors = plt.cm.viridis([i / max(1, count - 1) * 0.9 for i in range(count)])
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
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, output, format="png", dpi=130)
