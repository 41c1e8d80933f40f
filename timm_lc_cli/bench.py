"""``timm-lc bench``: performance as ratios measured side by side in one run (never timed tests).

Sections: ``timm_lc.studies.bench.SECTIONS``. ``--markdown docs/performance.md`` rewrites the tables of
the sections it ran in that document (each under the command and machine that measured it).
"""
import argparse
import datetime
import importlib
import json
import os
from pathlib import Path
from typing import List, Optional

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``timm-lc bench`` parser, built without torch (``--help`` and usage errors answer at once).

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="timm-lc bench", allow_abbrev=False,
        description="Performance as ratios measured side by side in one run (never timed tests).")
    parser.add_argument("--sections", nargs="+", metavar="SECTION",
                        help="sections to run (default: all of timm_lc.studies.bench.SECTIONS)")
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repeats (about a minute each)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    parser.add_argument("--json", metavar="PATH", help="also write all rows to this JSON file")
    parser.add_argument("--markdown", metavar="PATH",
                        help="also rewrite the tables of the sections run in this markdown file (e.g. "
                             "docs/performance.md), keeping its other text")
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
    for flag, target in (("--json", args.json), ("--markdown", args.markdown)):
        if target and (Path(target).is_dir() or not Path(target).absolute().parent.is_dir()):
            parser.error(f"{flag} {target}: expected a file in an existing directory")
    import torch

    from timm_lc._io import write_text_atomic
    from timm_lc.studies.bench import SECTIONS, format_table, replace_section
    from timm_lc.train.resolve import cpu_flags

    unknown = [s for s in args.sections or () if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; expected any of {', '.join(SECTIONS)}")
    args.sections = args.sections or list(SECTIONS)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch.cuda.is_available() is False")
    if args.device == "cuda":
        device = torch.cuda.get_device_name()
    else:
        present = cpu_flags()
        simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in present]
        device = f"{os.cpu_count()} CPU cores with {', '.join(simd) or 'no x86 SIMD flags read'}"
    machine = f"{device}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    print(f"timm-lc bench on {machine}")
    flags = (" --quick" if args.quick else "") + (" --device cuda" if args.device == "cuda" else "")
    results, document = {}, None
    if args.markdown:
        path = Path(args.markdown)
        document = path.read_text(encoding="utf-8") if path.is_file() else "# Performance (`timm-lc bench`)\n"
    for name in args.sections:
        module = importlib.import_module(f"timm_lc.studies.bench.{name}")
        rows = module.run(quick=args.quick, device=args.device)
        results[name] = rows
        table = format_table(rows, module.COLUMNS)
        print(f"\n## {name}\n\n{table}", flush=True)
        if document is not None:
            measured = f"`timm-lc bench --sections {name}{flags}` on {machine}; {datetime.date.today()}:"
            document = replace_section(document, name, f"{measured}\n\n{table}")
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2))
    if document is not None:
        write_text_atomic(args.markdown, document)
    return 0
