"""``timm-lc doctor``: the prepared GPU check (its sections: ``timm_lc.studies.doctor``), one JSON file."""
import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, Optional, Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``timm-lc doctor`` parser, built without torch (``--help`` and usage errors answer at once).

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="timm-lc doctor", description="The prepared GPU check run, every result in one JSON file.",
        allow_abbrev=False)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cuda: the full check (default); cpu: a dry run of the script at toy sizes")
    parser.add_argument("--output", default="doctor.json", help="the JSON file to write (default: %(default)s)")
    parser.add_argument("--sections", nargs="+", metavar="SECTION",
                        help="sections to run (default: all of timm_lc.studies.doctor.SECTIONS)")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="sections that would start after this many seconds are skipped (default: %(default)g)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak the layer bench rates against (default: the H200 SXM's, "
                             "timm_lc.studies.doctor.H200_BF16_DENSE_TFLOPS)")
    return parser


def _summary_line(name: str, result: Dict[str, Any]) -> str:
    if "skipped" in result or "error" in result:
        return result.get("skipped") or result["error"]
    if name == "tests":
        return result["summary"]
    if name == "layer":
        return "; ".join(f"{r['layer']}@{r['batch']}: " + (r["error"] if "error" in r else ", ".join(
            f"{k} {r[k]['ms']} ms" for k in r if isinstance(r[k], dict))) for r in result["rows"])
    if name == "sleep":
        return f"{result['model']}: {result['wall_s']} s, snr {result.get('snr')}"
    return "; ".join(f"{r['precision']}: " + (r["error"] if "error" in r else f"{r['images_per_s']} images/s")
                     for r in result["rows"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs ``timm-lc doctor``.

    Args:
        argv: the command's arguments; None: ``sys.argv[1:]``.

    Returns:
        0 when every section passed, 1 otherwise, 2 for a usage error or no CUDA with ``--device cuda``.
    """
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    import torch

    from timm_lc._io import write_text_atomic
    from timm_lc.studies.doctor import (
        H200_BF16_DENSE_TFLOPS, PLANS, SECTIONS, environment, error_record, run_layer_bench, run_sleep, run_tests,
        run_train, section_ok)

    unknown = [s for s in args.sections or () if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; expected any of {', '.join(SECTIONS)}")
    args.sections = args.sections or list(SECTIONS)
    args.peak_tflops = args.peak_tflops or H200_BF16_DENSE_TFLOPS
    if args.device == "cuda" and not torch.cuda.is_available():
        print("timm-lc doctor: --device cuda needs a CUDA GPU, but torch.cuda.is_available() is False "
              "(use --device cpu for a dry run)", file=sys.stderr)
        return 2
    plan = PLANS[args.device]
    start = time.perf_counter()
    deadline = start + args.budget_s
    report: Dict[str, Any] = {"command": "timm-lc doctor " + " ".join(sys.argv[1:] if argv is None else argv),
                              "plan": asdict(plan), "sections": {}}
    try:
        report["environment"] = environment(args.device, args.peak_tflops)
    except Exception as err:  # noqa: BLE001 - recorded, the sections still run
        report["environment"] = error_record(err)
    runners: Dict[str, Callable[[], Dict[str, Any]]] = {
        "tests": lambda: run_tests(min(plan.test_timeout_s, max(deadline - time.perf_counter(), 30.0))),
        "layer": lambda: run_layer_bench(plan, args.device, args.peak_tflops),
        "sleep": lambda: run_sleep(plan, args.device),
        "train": lambda: run_train(plan, deadline),
    }
    ok = True
    for name in [s for s in SECTIONS if s in args.sections]:
        section_start = time.perf_counter()
        if section_start > deadline:
            result: Dict[str, Any] = {"skipped": f"the time budget of {args.budget_s:g} s was spent"}
        else:
            try:
                result = runners[name]()
            except Exception as err:  # noqa: BLE001 - recorded, the next section still runs
                result = error_record(err)
        result["section_s"] = round(time.perf_counter() - section_start, 1)
        report["sections"][name] = result
        ok = ok and section_ok(name, result)
        report["elapsed_s"] = round(time.perf_counter() - start, 1)
        write_text_atomic(args.output, json.dumps(report, indent=2, default=str))
        print(f"[doctor] {name} ({result['section_s']} s): {_summary_line(name, result)}", flush=True)
    print(f"[doctor] {'all sections ok' if ok else 'see the errors above'}; wrote {args.output}")
    return 0 if ok else 1
