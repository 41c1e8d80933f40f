"""``timm-lc bench``: performance as ratios measured side by side in one run (never timed tests).

Sections (``timm_lc.studies.bench``): ``layer``, ``sharing`` and ``training``.
"""
import argparse
import importlib
import json
from typing import List, Optional

from ..studies.bench import SECTIONS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="timm-lc bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repeats (about a minute each)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    parser.add_argument("--json", metavar="PATH", help="also write all rows to this JSON file")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    import torch

    from .._io import write_text_atomic
    from ..studies.bench import format_table

    parser = build_parser()
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch.cuda.is_available() is False")
    results = {}
    print(f"timm-lc bench on {args.device} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    for name in args.sections:
        module = importlib.import_module(f"timm_lc.studies.bench.{name}")
        rows = module.run(quick=args.quick, device=args.device)
        results[name] = rows
        print(f"\n## {name}\n\n{format_table(rows, module.COLUMNS)}", flush=True)
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2))
    return 0
