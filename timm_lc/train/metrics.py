"""Run metrics: an append-only ``metrics.jsonl`` and PNG plots of accuracy and sharing SNR.

Every record is one JSON object with an ``event`` ("train", "sleep", "eval") and the optimiser
``step``. Only the main process writes. On resume, records after the checkpoint's step are
dropped so the file reads as one uninterrupted run.
"""
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional
from .._io import atomic_path, write_text_atomic
from ..run_dir import read_metrics

__all__ = ["MetricsWriter", "read_metrics", "plot_metrics"]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and getattr(value, "numel", lambda: 2)() == 1:
        return _clean(value.item())
    return value


class MetricsWriter:
    """Appends records to ``metrics.jsonl``; a no-op on non-main processes (``enabled=False``).

    ``constant`` values (e.g. ``num_processes``) go into every record.
    """

    def __init__(self, path: os.PathLike, enabled: bool = True, constant: Optional[Dict[str, Any]] = None):
        self.path = Path(path)
        self.enabled = enabled
        self.constant = dict(constant or {})

    def truncate_after(self, step: int) -> None:
        """Drops records logged after ``step`` and "final" records (resume), rewriting the file atomically."""
        if not self.enabled or not self.path.is_file():
            return
        keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= step and r.get("event") != "final"]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def log(self, event: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        record = _clean({"event": event, "step": step, **self.constant, **values})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _series(records: List[Dict[str, Any]], event: str, key: str):
    pts = [(r["step"], r[key]) for r in records if r.get("event") == event and r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def plot_metrics(metrics_path: os.PathLike, out_dir: os.PathLike, title: Optional[str] = None) -> List[Path]:
    """Writes ``accuracy.png`` (test/train accuracy vs step) and, if the run slept, ``snr.png``."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

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
    _save(fig, out_dir / "accuracy.png")
    plt.close(fig)
    written.append(out_dir / "accuracy.png")

    after_x, after_y = _series(records, "sleep", "snr")
    eval_x, eval_y = _series(records, "eval", "snr")
    if after_x or eval_x:
        fig, ax = plt.subplots(figsize=(6, 4))
        if after_x:
            ax.plot(after_x, after_y, ".", markersize=3, label="after each sleep")
        if eval_x:
            ax.plot(eval_x, eval_y, marker="o", markersize=3, label="at evaluation")
        positive = [v for v in after_y + eval_y if v and v > 0]
        if positive and max(positive) / min(positive) > 100:
            ax.set_yscale("log")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("sharing SNR (pool mean^2 / pool variance)")
        ax.set_title(title or "weight sharing SNR")
        ax.grid(alpha=0.3)
        ax.legend()
        _save(fig, out_dir / "snr.png")
        plt.close(fig)
        written.append(out_dir / "snr.png")
    return written
