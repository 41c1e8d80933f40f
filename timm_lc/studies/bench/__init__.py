"""``timm-lc bench``: performance as ratios measured side by side in one run (never timed tests).

Sections (each a module here with ``run(quick, device) -> list[dict]`` and ``COLUMNS``):
``layer`` (LocallyConnected2d vs GEMM floor, reference formulation and Conv2d), ``sharing``
(sleep-phase cost vs its GEMM floor and as a fraction of training time), ``training``
(images/s of LC with and without sleep, and of the conv net, in fp32 and bf16), ``busy`` (the
slowdown when another process keeps a core busy) and ``ddp_sleep`` (the sleep's wall time in
1 and 2 processes). Every section times and measures memory with ``timm_lc.studies.measure``.
"""
from typing import List, Sequence

SECTIONS = ("layer", "sharing", "training", "busy", "ddp_sleep")


def format_table(rows: List[dict], columns: Sequence[str]) -> str:
    """A GitHub-markdown table of ``rows`` restricted to ``columns``."""
    columns = [c for c in columns if any(c in r for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
