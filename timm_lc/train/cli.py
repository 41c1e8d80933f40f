"""``timm-lc train`` / ``python -m timm_lc.train``: train from a YAML recipe with ``--key value`` overrides.

Without arguments it trains the embedded demo (an LC ResNet with Hebbian sleep sharing on
scikit-learn's digits) into ``runs/demo``. Every config key is a flag (``--max-steps 100``,
``--sleep-every 1``, ``--decay-milestones "[100, 150]"``); values are read as YAML. An output
directory that already holds a run is never overwritten: pass ``--resume`` to continue it from
its latest checkpoint (its recipe.yaml is reused unless ``--config`` is given) or ``--overwrite``.
Multi-process: ``accelerate launch [--config_file recipes/accelerate/multi_gpu.yaml] -m timm_lc.train ...``.
"""
import argparse
import dataclasses
import sys
from typing import Any, Dict, List, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from .config import TrainConfig, config_from_dict, load_config, valid_keys

__all__ = ["build_parser", "parse_config", "main"]



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
    parser = argparse.ArgumentParser(
        prog="timm-lc train", description=__doc__.split("\n\n")[0],
        epilog="All config keys (defaults = the embedded demo) are flags; see a recipe in recipes/ for examples.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", "-c", help="YAML recipe, e.g. recipes/cifar10/lc_hebb_every10.yaml")
    hints = get_type_hints(TrainConfig)
    defaults = TrainConfig().to_dict()
    for f in dataclasses.fields(TrainConfig):
        kind = _field_kind(hints[f.name])
        flags = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        help_ = f"(default: {defaults[f.name]!r})"
        if kind is bool:
            parser.add_argument(*flags, dest=f.name, nargs="?", const=True, metavar="BOOL",
                                type=lambda t: _parse_value(t, bool), help=help_)
        else:
            parser.add_argument(*flags, dest=f.name, metavar=f.name.upper(),
                                type=lambda t, k=kind: _parse_value(t, k), help=help_)
    return parser


def parse_config(argv: Optional[List[str]] = None) -> TrainConfig:
    """The resolved TrainConfig of a command line (defaults < recipe < flags; a resumed run's recipe.yaml)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = [u for u in unknown if u.startswith("-")] or unknown
        raise ValueError(f"unknown option(s) {' '.join(flags)}; valid keys: --config, "
                         + ", ".join("--" + k.replace("_", "-") for k in valid_keys()))
    values: Dict[str, Any] = vars(args)
    config_path = values.pop("config", None)
    base = None
    if values.get("resume") and config_path is None:
        from .loop import RECIPE_NAME, resolve_output_dir
        out = resolve_output_dir(config_from_dict({k: v for k, v in values.items() if k in ("output_dir", "name")}))
        saved = out / RECIPE_NAME
        if saved.is_file():
            with open(saved) as f:
                stored = yaml.safe_load(f) or {}
            base = config_from_dict(dict(stored, resume=False, overwrite=False), source=str(saved))
    return load_config(config_path, overrides=values, base=base)


def main(argv: Optional[List[str]] = None) -> int:
    from .data import DatasetUnavailableError
    from .loop import RunExistsError, train
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = parse_config(argv)
        train(cfg)
    except (ValueError, TypeError, FileNotFoundError, RunExistsError, DatasetUnavailableError) as e:
        print(f"timm-lc train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
