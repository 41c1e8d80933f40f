"""Training configuration: one flat dataclass, loaded from a YAML recipe plus ``--key value`` overrides.

Precedence (lowest first): the dataclass defaults (= the embedded demo), the recipe file, the
command line. Every key is validated against the dataclass; an unknown key is an error that lists
the valid ones, so a typo in a recipe never silently trains something else.
"""
import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union, get_args, get_origin, get_type_hints

import yaml
from .._io import write_text_atomic
from ..sharing import MODES as SHARING_MODES, POOL_MODES

__all__ = ["TrainConfig", "load_config", "config_from_dict", "save_config", "valid_keys"]

MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class TrainConfig:
    """Everything a run needs. Defaults train the embedded demo: an LC net with sleep sharing on digits."""
    # model
    model: str = "lc_resnet_tiny_hebb"
    model_kwargs: Dict[str, Any] = field(default_factory=dict)  # extra timm create_model kwargs
    img_size: Optional[int] = None  # None: the data set's native size (demo: its canvas)
    num_classes: Optional[int] = None  # None: from the data set
    # data
    dataset: str = "demo"  # demo | cifar10 | cifar100 | tinyimagenet | imagenet | hub name | local dir
    dataset_path: Optional[str] = None  # a local save_to_disk copy standing in for the hub download
    train_split: str = "train"
    eval_split: Optional[str] = None  # None: the data set's usual test/validation split
    image_column: Optional[str] = None  # None: the data set's known column (img / image)
    label_column: Optional[str] = None  # None: the data set's known column (label / fine_label)
    data_dir: Optional[str] = None  # datasets cache_dir
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    num_workers: int = 0
    translate: int = 4  # training-time random translation, max pixels per axis (random crop padding)
    test_shift: int = 4  # demo only: max translation of the (fixed) test placements
    canvas_size: int = 16  # demo only: the 8x8 digits are placed on a canvas of this size
    hflip: bool = False
    repeats: int = 1  # the paper's translation baseline: n augmented copies of each image per batch
    # optimisation
    epochs: int = 30
    max_steps: Optional[int] = None  # stop after this many optimiser steps (None: epochs decide)
    batch_size: int = 64  # per process, before ``repeats``
    eval_batch_size: Optional[int] = None  # None: 2 x batch_size
    grad_accum_steps: int = 1
    opt: str = "adamw"
    lr: float = 0.005
    weight_decay: float = 1e-4
    momentum: float = 0.9
    clip_grad: Optional[float] = None
    label_smoothing: float = 0.0
    sched: str = "multistep"
    decay_milestones: List[int] = field(default_factory=lambda: [15, 23])  # lr x decay_rate after m epochs
    decay_rate: float = 0.25
    warmup_epochs: int = 0
    warmup_lr: float = 1e-5
    min_lr: float = 0.0
    sched_on_updates: bool = False
    mixed_precision: str = "no"
    channels_last: bool = False
    compile: bool = False
    ema: bool = False
    ema_decay: float = 0.999
    # sleep-phase weight sharing; None: the model's own sleep settings (``_hebb`` models)
    sleep: Optional[bool] = None  # None: sleep iff the model carries sleep settings
    sleep_every: Optional[int] = None
    sleep_mode: Optional[str] = None
    sleep_pools: Optional[str] = None
    sleep_iterations: Optional[int] = None
    sleep_batch_size: Optional[int] = None
    sleep_gamma: Optional[float] = None
    sleep_lr: Optional[float] = None
    # run bookkeeping
    seed: int = 0
    output_dir: Optional[str] = None  # None: runs/<recipe name>
    overwrite: bool = False
    resume: bool = False
    checkpoint_every: Optional[int] = None  # optimiser steps; None: at the end of every epoch
    keep_checkpoints: int = 2
    eval_every: Optional[int] = None  # optimiser steps; None: at the end of every epoch
    log_every: int = 20
    progress: bool = True
    plots: bool = True
    name: Optional[str] = None  # run name; None: the recipe file's name

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        """Checks values that types alone cannot; raises ValueError naming expected vs received."""
        def positive(key: str, allow_none: bool = False, allow_zero: bool = False) -> None:
            value = getattr(self, key)
            if value is None and allow_none:
                return
            if value is None or value < 0 or (value == 0 and not allow_zero):
                expected = "a non-negative" if allow_zero else "a positive"
                raise ValueError(f"config key {key!r}: expected {expected} number, got {value!r}")

        for key in ("epochs", "batch_size", "grad_accum_steps", "repeats", "keep_checkpoints", "log_every"):
            positive(key)
        for key in ("max_steps", "checkpoint_every", "eval_every", "eval_batch_size", "img_size", "num_classes",
                    "max_train_samples", "max_eval_samples", "sleep_every", "sleep_iterations", "sleep_batch_size"):
            positive(key, allow_none=True)
        for key in ("translate", "test_shift", "num_workers", "warmup_epochs"):
            positive(key, allow_zero=True)
        positive("lr")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"config key 'mixed_precision': expected one of {MIXED_PRECISION}, "
                             f"got {self.mixed_precision!r}")
        if self.sleep_mode is not None and self.sleep_mode not in SHARING_MODES:
            raise ValueError(f"config key 'sleep_mode': expected one of {SHARING_MODES}, got {self.sleep_mode!r}")
        if self.sleep_pools is not None and self.sleep_pools not in POOL_MODES:
            raise ValueError(f"config key 'sleep_pools': expected one of {POOL_MODES}, got {self.sleep_pools!r}")
        if self.canvas_size < 8:
            raise ValueError(f"config key 'canvas_size': expected >= 8 (the digits are 8x8), got {self.canvas_size}")
        if self.overwrite and self.resume:
            raise ValueError("--overwrite and --resume contradict each other: pass one of them")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"config key 'label_smoothing': expected a value in [0, 1), got {self.label_smoothing}")
        return self


def valid_keys() -> List[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def _unknown_key_error(key: str, source: str) -> ValueError:
    keys = valid_keys()
    close = difflib.get_close_matches(key, keys, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"unknown config key {key!r} in {source}{hint}; valid keys: {', '.join(keys)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Checks ``value`` against the field type ``tp``; ints are accepted where floats are expected."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if value is None:
        raise ValueError(f"config key {key!r}: expected {_type_name(tp)}, got None")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"config key {key!r}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"config key {key!r}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"config key {key!r}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"config key {key!r}: expected a string, got {value!r}")
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {key!r}: expected a list, got {value!r}")
        return [_coerce(key, v, args[0]) for v in value] if args else list(value)
    if origin in (dict, Dict):
        if not isinstance(value, Mapping):
            raise ValueError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def config_from_dict(values: Mapping[str, Any], base: Optional[TrainConfig] = None,
                     source: str = "config") -> TrainConfig:
    """Returns ``base`` (default: the defaults) updated with ``values``, type-checked and validated."""
    hints = get_type_hints(TrainConfig)
    current = (base or TrainConfig()).to_dict()
    for key, value in values.items():
        norm = str(key).replace("-", "_")
        if norm not in hints:
            raise _unknown_key_error(str(key), source)
        current[norm] = _coerce(norm, value, hints[norm])
    return TrainConfig(**current).validate()


def load_config(path: Optional[Union[str, os.PathLike]] = None, overrides: Optional[Mapping[str, Any]] = None,
                base: Optional[TrainConfig] = None) -> TrainConfig:
    """Reads a YAML recipe (optional) over ``base`` and applies ``overrides`` on top."""
    cfg = base or TrainConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recipe {str(path)!r} does not exist")
        with open(path) as f:
            values = yaml.safe_load(f) or {}
        if not isinstance(values, Mapping):
            raise ValueError(f"recipe {str(path)!r}: expected a mapping of keys to values, got {type(values).__name__}")
        values = dict(values)
        # recipes/cifar10/lc.yaml -> "cifar10-lc"; any other file -> its stem
        in_recipes = path.resolve().parent.parent.name == "recipes"
        values.setdefault("name", f"{path.parent.name}-{path.stem}" if in_recipes else path.stem)
        cfg = config_from_dict(values, base=cfg, source=str(path))
    if overrides:
        cfg = config_from_dict(overrides, base=cfg, source="command line")
    return cfg


def save_config(cfg: TrainConfig, path: Union[str, os.PathLike]) -> None:
    """Writes the resolved config as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
