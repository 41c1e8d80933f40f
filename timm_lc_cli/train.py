"""``timm-lc train`` / ``python -m timm_lc.train``: train from a YAML recipe with ``--key value`` overrides.

Without arguments it trains the embedded demo (an LC ResNet with Hebbian sleep sharing on
scikit-learn's digits) into ``runs/demo``. Every config key is a flag (``--max-steps 100``,
``--sleep-every 1``, ``--decay-milestones "[100, 150]"``); values are read as YAML. An output
directory that already holds a run is never overwritten: pass ``--resume`` to continue it from
its latest checkpoint (its recipe.yaml is reused unless ``--config`` is given) or ``--overwrite``.
A start that fails leaves the output directory as it was. Ctrl-C stops cleanly and says where
the last checkpoint is. ``--print-config`` prints the resolved configuration (the sleep in effect
included) and exits.
Multi-process: ``accelerate launch [--config_file recipes/accelerate/multi_gpu.yaml] -m timm_lc.train ...``.
"""
import argparse
import dataclasses
import difflib
import os
import sys
from typing import Any, Dict, List, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from timm_lc_settings.train import TrainConfig, config_from_dict, load_config, read_yaml, valid_keys

__all__ = ["UnknownOptionError", "build_parser", "parse_config", "main"]

PROG = "timm-lc train"
_METAVARS = {bool: "BOOL", int: "N", float: "X", list: "LIST", dict: "MAPPING"}


def _field_kind(tp: Any) -> Any:
    if get_origin(tp) is Union:
        tp = [a for a in get_args(tp) if a is not type(None)][0]
    return tp


def _parse_value(text: str, kind: Any) -> Any:
    if kind is str:
        return None if text.lower() in ("none", "null", "~") else text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def build_parser() -> argparse.ArgumentParser:
    """One ``--dashed-name`` flag per config key, with its description, choices and default.

    Returns:
        The ``timm-lc train`` parser, built from ``TrainConfig`` without torch.
    """
    parser = argparse.ArgumentParser(
        prog=PROG, usage="%(prog)s [--config FILE] [--print-config] [--KEY VALUE ...]",
        description="Train a model from a YAML recipe with --key value overrides (defaults < recipe < flags; "
                    "without a recipe: the embedded demo, offline).", argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
        epilog="Values are YAML (none/null unsets an optional key). An output directory holding a run needs "
               "--resume or --overwrite; a failed start leaves it as it was; Ctrl-C stops cleanly and names the "
               "last checkpoint. Multi-process: accelerate launch [--config_file recipes/accelerate/...] "
               "-m timm_lc.train ...")
    parser.add_argument("--config", "-c", metavar="FILE",
                        help="YAML recipe, e.g. recipes/cifar10/lc_hebb_every10.yaml")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration (every key) as YAML and exit; writes nothing")
    hints = get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind, choices = _field_kind(hints[f.name]), f.metadata["choices"]
        default = TrainConfig().to_dict()[f.name]
        help_ = f"{f.metadata['help']} (default: {'unset' if default is None else repr(default)})"
        metavar = "{" + ",".join(choices) + "}" if choices else _METAVARS.get(get_origin(kind) or kind, "TEXT")
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, metavar=metavar, help=help_,
                            type=lambda t, k=kind: _parse_value(t, k),
                            **(dict(nargs="?", const=True) if kind is bool else {}))
    return parser


def _resumed_recipe(values: Dict[str, Any]) -> Optional[TrainConfig]:
    """The recipe.yaml of the run that ``--resume`` continues (None if it has none)."""
    from timm_lc.run_dir import RECIPE_NAME
    from timm_lc.train.loop import resolve_output_dir
    out = resolve_output_dir(config_from_dict({k: v for k, v in values.items() if k in ("output_dir", "name")}))
    saved = out / RECIPE_NAME
    if not saved.is_file():
        return None
    stored = read_yaml(saved) or {}
    return config_from_dict(dict(stored, resume=False, overwrite=False), source=str(saved))


class UnknownOptionError(ValueError):
    """A flag that is not a config key (reported after the usage line, as argparse reports its own)."""


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        flags = [u for u in unknown if u.startswith("-")] or unknown
        options = ["--config", "--print-config"] + ["--" + k.replace("_", "-") for k in valid_keys()]
        close = difflib.get_close_matches(flags[0].split("=")[0], options, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UnknownOptionError(f"unknown option(s) {' '.join(flags)}{hint}; valid options: {', '.join(options)}")
    return args


def _config(args: argparse.Namespace) -> TrainConfig:
    values: Dict[str, Any] = dict(vars(args))
    config_path = values.pop("config", None)
    values.pop("print_config", None)
    base = _resumed_recipe(values) if values.get("resume") and config_path is None else None
    return load_config(config_path, overrides=values, base=base)


def parse_config(argv: Optional[List[str]] = None) -> TrainConfig:
    """The TrainConfig of a command line (defaults < recipe < flags; a resumed run's recipe.yaml).

    Args:
        argv: the ``timm-lc train`` arguments; None: ``sys.argv[1:]``.

    Returns:
        The validated configuration.

    Raises:
        UnknownOptionError: a flag that is not a config key.
        ValueError: a bad value or recipe (FileNotFoundError: a missing recipe).
    """
    return _config(_parse(argv))


def _interrupted(cfg: Optional[TrainConfig]) -> str:
    if cfg is None:
        return "interrupted before training started; nothing was written"
    from timm_lc.train.checkpoint import latest_checkpoint
    from timm_lc.train.loop import resolve_output_dir
    out = resolve_output_dir(cfg)
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        return f"interrupted before the first checkpoint; nothing to resume in {out}"
    return f"interrupted; last checkpoint {ckpt} (continue with --resume --output-dir {out})"


def _error(err: BaseException) -> int:
    if isinstance(err, UnknownOptionError):
        print(build_parser().format_usage(), end="", file=sys.stderr)
    print(f"{PROG}: error: {err}", file=sys.stderr)
    return 2


def main(argv: Optional[List[str]] = None) -> int:
    """Runs ``timm-lc train`` (and ``python -m timm_lc.train``).

    Args:
        argv: the command's arguments; None: ``sys.argv[1:]``.

    Returns:
        0 on success, 2 for a bad flag, value, recipe, model, data set or output directory, 130 on Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = None
    try:
        try:
            args = _parse(argv)  # --help exits here
            cfg = _config(args)  # a bad value or a missing recipe fails here, before the library (torch) loads
        except (ValueError, TypeError, OSError) as e:
            return _error(e)
        from timm_lc.train import resolve_config, train
        from timm_lc.train.data import DatasetUnavailableError
        try:
            if getattr(args, "print_config", False):
                sys.stdout.write(yaml.safe_dump(resolve_config(cfg).to_dict(), sort_keys=False))
            else:
                train(cfg)
        except (ValueError, TypeError, OSError, DatasetUnavailableError) as e:
            return _error(e)
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":
            print(f"{PROG}: {_interrupted(cfg)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
