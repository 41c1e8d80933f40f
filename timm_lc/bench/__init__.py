"""``timm-lc bench``: performance as ratios measured side by side in one run (never timed tests).

Sections (each a module here with ``run(quick, device) -> list[dict]`` and ``COLUMNS``):
``layer`` (LocallyConnected2d vs GEMM floor, reference formulation and Conv2d), ``sharing``
(sleep-phase cost vs its GEMM floor and as a fraction of training time) and ``training``
(images/s of LC with and without sleep, and of the conv net).
"""
import argparse
import importlib
import json
from typing import List, Optional, Sequence

import torch
from .._io import write_text_atomic

SECTIONS = ("layer", "sharing", "training")


def sync(device) -> None:
    """Waits for queued CUDA work so wall-clock timings are honest (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def format_table(rows: List[dict], columns: Sequence[str]) -> str:
    """A GitHub-markdown table of ``rows`` restricted to ``columns``."""
    columns = [c for c in columns if any(c in r for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="timm-lc bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repeats (about a minute each)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=["cpu", "cuda"])
    parser.add_argument("--json", metavar="PATH", help="also write all rows to this JSON file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch.cuda.is_available() is False")
    results = {}
    print(f"timm-lc bench on {args.device} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    for name in args.sections:
        module = importlib.import_module(f"{__name__}.{name}")
        rows = module.run(quick=args.quick, device=args.device)
        results[name] = rows
        print(f"\n## {name}\n\n{format_table(rows, module.COLUMNS)}", flush=True)
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2))
    return 0
