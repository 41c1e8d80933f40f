"""The ``timm-lc`` commands: dispatches to ``timm_lc.commands.<name>`` (imported only when run).

A command's arguments are parsed before the library loads (``timm_lc._load_api``), so
``--help`` and usage errors answer at once when the console script deferred it (``timm_lc_cli``).
"""
import importlib
import sys
from importlib.metadata import version
from typing import List, Optional

import timm_lc

# sub-command -> (module with ``build_parser()`` and ``main(argv) -> int``, one-line help)
COMMANDS = {
    "train": ("timm_lc.commands.train", "train a model from a YAML recipe (default: the embedded demo)"),
    "eval": ("timm_lc.commands.eval", "measure a model's / run's accuracy on a data set"),
    "convert": ("timm_lc.commands.convert", "convert a timm conv model to a locally connected one"),
    "bench": ("timm_lc.commands.bench", "speed and memory ratios measured side by side"),
    "push": ("timm_lc.commands.push", "publish a run directory to the Hugging Face Hub"),
    "sleep-convergence": ("timm_lc.commands.sleep_convergence", "plot Hebbian sleep convergence vs theory"),
    "replicate": ("timm_lc.commands.replicate", "small-scale replication study of the paper"),
    "doctor": ("timm_lc.commands.doctor",
               "the prepared GPU check: CUDA tests, layer bench, sleep, training (one JSON)"),
}


def _usage() -> str:
    lines = ["usage: timm-lc [--version] [--help] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<18} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `timm-lc COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
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
        module = importlib.import_module(COMMANDS[name][0])
        module.build_parser().parse_args(rest)  # --help and usage errors exit here, before the library loads
        timm_lc._load_api()
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:  # commands with state to report (train) catch it themselves
        print(f"timm-lc {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
