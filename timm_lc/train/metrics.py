"""Run metrics: an append-only ``metrics.jsonl`` (read back with ``timm_lc.run_dir.read_metrics``).

Every record is one JSON object with an ``event`` ("train", "sleep", "eval") and the optimiser
``step``. Only the main process writes. On resume, records after the checkpoint's step are
dropped so the file reads as one uninterrupted run.
"""
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Optional
from .._io import write_text_atomic
from ..run_dir import read_metrics

__all__ = ["MetricsWriter", "read_metrics"]


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
        """Drops records logged after ``step`` and "final" records (resume), rewriting the file atomically.

        Args:
            step: the step of the checkpoint the run resumes from; records up to it are kept.
        """
        if not self.enabled or not self.path.is_file():
            return
        keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= step and r.get("event") != "final"]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def log(self, event: str, step: int, **values: Any) -> None:
        """Appends one record (with the ``constant`` values) to the file; nothing when disabled.

        Args:
            event: the record's kind ("train", "sleep", "eval", ...).
            step: the optimiser step it belongs to.
            **values: the record's values; non-finite floats are written as null, one-element tensors as numbers.
        """
        if not self.enabled:
            return
        record = _clean({"event": event, "step": step, **self.constant, **values})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
