"""``timm-lc sleep-convergence``: plot Hebbian sleep convergence vs fan-in against theory
(the measurement: ``timm_lc.sharing.convergence``)."""
import argparse
import os
from typing import List, Optional

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``timm-lc sleep-convergence`` parser, built without torch (``--help`` and usage errors answer at once).

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="timm-lc sleep-convergence", allow_abbrev=False,
        description="Plot the deviation of Hebbian sleep vs iteration for several fan-ins, against theory.")
    parser.add_argument("--output", default=os.path.join("docs", "sleep_convergence.png"), help="PNG to write")
    parser.add_argument("--in-channels", type=int, nargs="+", default=[3, 16, 64, 256, 512],
                        help="input channels of the 3x3 layers (fan-in = 9 x this)")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--gamma", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Runs ``timm-lc sleep-convergence``.

    Args:
        argv: the command's arguments; None: ``sys.argv[1:]``.

    Returns:
        0 (a usage error exits with 2).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.batch_size < 1 or min(args.in_channels) < 1:
        parser.error("--iterations, --batch-size and --in-channels must be positive")
    from timm_lc.figures import plot_sleep_convergence
    from timm_lc.sharing.convergence import REFERENCE_STEP, measure

    results = {key: [measure(c, args.iterations, args.batch_size, args.gamma, args.seed, lr)
                     for c in args.in_channels]
               for key, lr in (("normalised", None), ("reference", REFERENCE_STEP))}
    print(f"deviation from the fixed point left after {args.iterations} iterations (relative to its start), and "
          f"the first iteration at which the normalised step leaves <= 1%")
    print(f"{'fan-in':>7} | {'normalised: measured':>20} {'theory':>9} {'to 1%':>7} | {'fixed 0.1: measured':>19} "
          f"{'theory':>9}")
    for ours, ref in zip(results["normalised"], results["reference"]):
        to_1pc = next((str(t + 1) for t, v in enumerate(ours["measured"]) if v <= 0.01), f">{args.iterations}")
        print(f"{ours['fan_in']:>7} | {ours['measured'][-1]:>20.3g} {ours['expected'][-1]:>9.3g} {to_1pc:>7} | "
              f"{ref['measured'][-1]:>19.3g} {ref['expected'][-1]:>9.3g}")
    plot_sleep_convergence(results, args.iterations, args.batch_size, args.gamma, args.output, REFERENCE_STEP)
    print(f"wrote {args.output}")
    return 0
