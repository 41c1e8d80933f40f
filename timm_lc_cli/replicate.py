"""``timm-lc replicate``: the paper's comparison at small scale, several seeds, on real data
(the study itself: ``timm_lc.studies.replicate``)."""
import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``timm-lc replicate`` parser, built without torch (``--help`` and usage errors answer at once).

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="timm-lc replicate", description="The paper's comparison at small scale, several seeds, on real data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    parser.add_argument("--dataset", default="digits", help="which study, of timm_lc.studies.replicate.STUDIES")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (0, 1, ...)")
    parser.add_argument("--variants", nargs="+", default=argparse.SUPPRESS, metavar="V",
                        help="variants to train, of timm_lc.studies.replicate.VARIANTS (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the study's)")
    parser.add_argument("--steps", type=int, default=None, help="stop every run after this many optimiser steps")
    parser.add_argument("--lr", type=float, default=None,
                        help="AdamW learning rate (default: the study's; --tune chooses its own)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: the study's)")
    parser.add_argument("--train-samples", type=int, default=None,
                        help="training images (default: the study's; digits: all 1,437)")
    parser.add_argument("--repeats", type=int, default=None, help="copies per image for lc_translations")
    parser.add_argument("--tune", action="store_true",
                        help="first choose each variant's optimiser (AdamW / SGD-momentum), lr and pooled optimiser "
                             "state on 10%% of the training images held out (seed 0), then train every seed at it")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at a time, each on cpu_count/jobs threads")
    parser.add_argument("--output", default="recipes/results", help="where the results files go")
    parser.add_argument("--runs-dir", default=None, help="where the run directories go (default: runs/<study>)")
    parser.add_argument("--publish", action="store_true",
                        help="write model cards and manifest entries for the best LC + sharing and plain LC runs")
    parser.add_argument("--manifest", default="hub/manifest.json", help="manifest that --publish adds to")
    parser.add_argument("--smoke", action="store_true",
                        help="CI check: 1 seed, 10 steps, 256 training and 512 test images, results under "
                             "--runs-dir (overrides --seeds/--steps/--train-samples/--output)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Runs ``timm-lc replicate``.

    Args:
        argv: the command's arguments; None: ``sys.argv[1:]``.

    Returns:
        0 on success, 2 for a bad study, variant or value.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from timm_lc.studies.replicate import (
        STUDIES, VARIANTS, gap_closed, ordering_checks, publish_checkpoints, run_study, study_setup, summarise,
        tune_study, write_results)

    try:
        if args.dataset not in STUDIES:
            raise ValueError(f"unknown study {args.dataset!r}; expected one of {', '.join(STUDIES)}")
        args.variants = getattr(args, "variants", list(VARIANTS))
        unknown = [v for v in args.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {', '.join(unknown)}; expected any of {', '.join(VARIANTS)}")
        for key in ("seeds", "jobs"):
            if getattr(args, key) < 1:
                raise ValueError(f"--{key}: expected a positive integer, got {getattr(args, key)}")
        runs_dir = Path(args.runs_dir or Path("runs") / STUDIES[args.dataset].results_name)
        seeds, steps, samples, epochs, output = range(args.seeds), args.steps, args.train_samples, args.epochs, \
            Path(args.output)
        eval_samples = None
        if args.smoke:
            seeds, steps, samples, epochs, output = range(1), 10, 256, 3, runs_dir / "results"
            eval_samples = 512
        setup = study_setup(args.dataset, epochs=epochs, lr=args.lr, batch_size=args.batch_size,
                            train_samples=samples, max_steps=steps, repeats=args.repeats, eval_samples=eval_samples)
        spec = STUDIES[args.dataset]
        variants = list(dict.fromkeys(args.variants))
        start = time.perf_counter()
        selection, choices = tune_study(variants, setup, runs_dir, jobs=args.jobs) if args.tune else ([], None)
        runs = run_study(variants, list(seeds), setup, runs_dir, jobs=args.jobs, choices=choices)
        summary = summarise(runs)
        train_samples = setup["max_train_samples"] or 1437
        results = {
            "dataset": spec.description.format(train_samples=train_samples, translate=setup.get("translate")),
            "command": "timm-lc replicate " + shlex.join(argv),
            "setup": setup, "train_samples": train_samples, "image_size": spec.image_size, "runs": runs,
            "summary": summary, "ordering": ordering_checks(summary), "gap_closed": gap_closed(summary),
            "jobs": args.jobs, "wall_time_s": time.perf_counter() - start,
        }
        if args.tune:
            results.update(selection=selection, choices={v: c.to_dict() for v, c in choices.items()})
        if args.publish:
            results["published"] = publish_checkpoints(results, Path(args.manifest), output / "cards")
        paths = write_results(results, output)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"timm-lc replicate: error: {e}", file=sys.stderr)
        return 2
    print(paths["md"].read_text(encoding="utf-8"))
    for item in results.get("published", []):
        print(f"publish {item['model']} ({item['variant']} seed {item['seed']}, {item['test_acc']:.1f}%): "
              f"{item['push']}")
    return 0
