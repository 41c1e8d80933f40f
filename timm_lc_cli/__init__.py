"""The ``timm-lc`` command line: one module per command, each with ``build_parser()`` and ``main(argv)``.

It lives outside the library so that ``import timm_lc`` can be a plain eager import (it registers
the models, which loads torch and timm) while ``timm-lc --help``, ``timm-lc COMMAND --help``,
usage errors and bad config values still answer at once: a command module builds its parser from
the torch-free ``timm_lc_settings`` and imports ``timm_lc`` inside ``main``, after its arguments
are checked. The library never imports this package.
"""
import importlib
import os
import sys
from importlib.metadata import version
from typing import List, Optional

from timm_lc_settings.openmp import SPIN_COUNT, SPIN_ENV

__all__ = ["COMMANDS", "main"]

# sub-command -> (module with ``build_parser()`` and ``main(argv) -> int``, one-line help)
COMMANDS = {
    "train": ("timm_lc_cli.train", "train a model from a YAML recipe (default: the embedded demo)"),
    "eval": ("timm_lc_cli.eval", "measure a model's / run's accuracy on a data set"),
    "convert": ("timm_lc_cli.convert", "convert a timm conv model to a locally connected one"),
    "bench": ("timm_lc_cli.bench", "speed and memory ratios measured side by side"),
    "push": ("timm_lc_cli.push", "publish a run directory to the Hugging Face Hub"),
    "sleep-convergence": ("timm_lc_cli.sleep_convergence", "plot Hebbian sleep convergence vs theory"),
    "replicate": ("timm_lc_cli.replicate", "small-scale replication study of the paper"),
    "doctor": ("timm_lc_cli.doctor",
               "the prepared GPU check: CUDA tests, layer bench, sleep, training (one JSON)"),
}


def _usage() -> str:
    lines = ["usage: timm-lc [--version] [--help] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<18} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `timm-lc COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Runs ``timm-lc COMMAND ARGS...`` (the console script's entry point).

    Args:
        argv: the arguments after ``timm-lc``; None: ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 2 for a usage error, 130 when interrupted.
    """
    # Before torch loads its OpenMP runtime, which reads the variable once (timm_lc_settings.openmp).
    os.environ.setdefault(SPIN_ENV, SPIN_COUNT)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(_usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"timm-lc {version('timm-lc')}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"timm-lc: unknown command {name!r}; expected one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return int(importlib.import_module(COMMANDS[name][0]).main(rest) or 0)
    except KeyboardInterrupt:  # commands with state to report (train) catch it themselves
        print(f"timm-lc {name}: interrupted", file=sys.stderr)
        return 130
