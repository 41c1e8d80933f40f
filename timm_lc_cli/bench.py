"""``timm-lc bench``: performance as ratios measured side by side in one run (never timed tests).

Sections (``timm_lc.studies.bench``): ``layer``, ``sharing`` and ``training``.
"""
import argparse
import importlib
import json
from typing import List, Optional

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``timm-lc bench`` parser, built without torch (``--help`` and usage errors answer at once).

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(prog="timm-lc bench", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--sections", nargs="+", metavar="SECTION",
                        help="sections to run (default: all of timm_lc.studies.bench.SECTIONS)")
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repeats (about a minute each)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    parser.add_argument("--json", metavar="PATH", help="also write all rows to this JSON file")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Runs ``timm-lc bench``.

    Args:
        argv: the command's arguments; None: ``sys.argv[1:]``.

    Returns:
        0 (a usage error exits with 2).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch

    from timm_lc._io import write_text_atomic
    from timm_lc.studies.bench import SECTIONS, format_table

    unknown = [s for s in args.sections or () if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; expected any of {', '.join(SECTIONS)}")
    args.sections = args.sections or list(SECTIONS)
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
