"""``timm-lc bench``: performance as ratios measured side by side in one run (never timed tests).

Sections (each a module here with ``run(quick, device) -> list[dict]`` and ``COLUMNS``):
``layer`` (LocallyConnected2d vs GEMM floor, reference formulation and Conv2d), ``sharing``
(sleep-phase cost vs its GEMM floor and as a fraction of training time), ``training``
(images/s of LC with and without sleep, and of the conv net, in fp32 and bf16), ``busy`` (the
slowdown when another process keeps a core busy) and ``ddp_sleep`` (the sleep's wall time in
1 and 2 processes). Every section times and measures memory with ``timm_lc.studies.measure``.
"""
import re
from typing import List, Sequence

__all__ = ["SECTIONS", "format_table", "replace_section"]

SECTIONS = ("layer", "sharing", "training", "busy", "ddp_sleep")


def format_table(rows: List[dict], columns: Sequence[str]) -> str:
    """A GitHub-markdown table of ``rows``.

    Args:
        rows: one dict per row.
        columns: the columns, in order; those no row holds are left out.

    Returns:
        The table, one line per row under its header.
    """
    columns = [c for c in columns if any(c in r for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def replace_section(document: str, section: str, body: str) -> str:
    """``document`` with the generated part of one section replaced by ``body``.

    The part is delimited by ``<!-- bench:SECTION -->`` and ``<!-- /bench:SECTION -->`` lines, so that
    ``timm-lc bench --markdown`` rewrites its tables and keeps the prose around them; a section the
    document lacks is appended under a ``## SECTION`` heading.

    Args:
        document: the markdown document (may be empty).
        section: the section's name.
        body: the new generated part (the command that measured it and its table).

    Returns:
        The updated document.
    """
    start, end = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    replaced, found = re.subn(re.escape(start) + r".*?" + re.escape(end), lambda _: block, document, count=1,
                              flags=re.S)
    if found:
        return replaced
    return f"{document.rstrip()}\n\n## {section}\n\n{block}\n".lstrip()
