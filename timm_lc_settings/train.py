"""Training configuration: one flat dataclass, loaded from a YAML recipe plus ``--key value`` overrides (no torch).

Precedence (lowest first): the dataclass defaults (= the embedded demo), the recipe file, the
command line. Every key is validated against the dataclass; an unknown key is an error that lists
the valid ones, so a typo in a recipe never silently trains something else.
"""
import copy
import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union, get_args, get_origin, get_type_hints

import yaml

from .sleep import MODEL_SLEEP, MODES as SHARING_MODES, POOL_MODES, SleepConfig

__all__ = ["TrainConfig", "load_config", "config_from_dict", "valid_keys", "read_yaml", "MIXED_PRECISION_RULE"]

MIXED_PRECISION = ("no", "fp16", "bf16")
SCHEDULERS = ("multistep", "step", "cosine", "tanh", "poly", "plateau", "constant", "wsd", "rsqrt", "none")
MIXED_PRECISION_RULE = (
    "unset: the precision of `accelerate launch` (its --mixed_precision or config) if launched through it, "
    "else bf16 autocast on a CPU with AMX-BF16 matrix units (amx_bf16 in /proc/cpuinfo; AVX2-only CPUs "
    "emulate bf16 matmuls, far slower than fp32) and no otherwise; on CUDA the recipe or the launcher decides. "
    "Master weights stay fp32")


def _key(default: Any, help: str, choices: Optional[Sequence[str]] = None) -> Any:
    """A config key: its default plus the description (and choices) that ``timm-lc train --help`` shows."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything a run needs. Defaults train the embedded demo: an LC net with sleep sharing on digits."""
    # model
    model: str = _key("lc_resnet_tiny_hebb", "timm model name (lc_resnet* or any timm model)")
    model_kwargs: Dict[str, Any] = _key({}, "extra timm.create_model kwargs, e.g. \"{drop_rate: 0.1}\"")
    img_size: Optional[int] = _key(None, "input size; unset: the model's pretrained cfg input_size "
                                         "(demo: canvas_size), whatever the data set")
    num_classes: Optional[int] = _key(None, "classifier size; unset: the data set's")
    # data
    dataset: str = _key("demo", "demo | fashion-mnist | cifar10 | cifar100 | tinyimagenet | imagenet | "
                                "a Hub data set id | a local image folder or save_to_disk directory")
    dataset_path: Optional[str] = _key(None, "a local save_to_disk copy standing in for the Hub download")
    train_split: str = _key("train", "training split")
    eval_split: Optional[str] = _key(None, "evaluation split; unset: the data set's test/validation split")
    image_column: Optional[str] = _key(None, "image column; unset: the data set's known or first image column")
    label_column: Optional[str] = _key(None, "label column; unset: the data set's known or first ClassLabel column")
    data_dir: Optional[str] = _key(None, "datasets cache directory")
    max_train_samples: Optional[int] = _key(None, "use only the first N training images")
    max_eval_samples: Optional[int] = _key(None, "evaluate only the first N images")
    num_workers: int = _key(0, "data loader worker processes")
    translate: int = _key(4, "training-time random translation: max pixels per axis (random-crop padding)")
    test_shift: int = _key(4, "demo and object_size: max translation of the (fixed) test placements")
    canvas_size: int = _key(16, "demo and object_size: the images (digits: 8x8) are placed on a canvas of this size")
    object_size: Optional[int] = _key(None, "resize each image to this size and place it on the canvas, within "
                                            "translate px of the centre in training, test_shift px in test")
    val_fraction: float = _key(0.0, "hold out this fraction of the training images (fixed) and evaluate on it "
                                    "instead of the test split: model selection (the reference's launcher: 0.1)")
    hflip: bool = _key(False, "random horizontal flips")
    repeats: int = _key(1, "the paper's translation baseline: n augmented copies of each image per batch")
    # optimisation
    epochs: int = _key(30, "training epochs")
    max_steps: Optional[int] = _key(None, "stop after this many optimiser steps; unset: epochs decide")
    batch_size: int = _key(64, "images per process and batch, before repeats")
    eval_batch_size: Optional[int] = _key(None, "evaluation batch size; unset: 2 x batch_size")
    grad_accum_steps: int = _key(1, "batches per optimiser step (gradient accumulation)")
    opt: str = _key("adamw", "timm optimiser name (timm.optim.list_optimizers())")
    lr: float = _key(0.005, "learning rate")
    weight_decay: float = _key(1e-4, "weight decay")
    momentum: float = _key(0.9, "momentum (SGD-type optimisers)")
    clip_grad: Optional[float] = _key(None, "clip the gradient norm to this value")
    label_smoothing: float = _key(0.0, "label smoothing of the cross-entropy, in [0, 1)")
    sched: str = _key("multistep", "timm learning-rate schedule", SCHEDULERS)
    decay_milestones: Optional[List[int]] = _key(
        None, "multistep: the lr is multiplied by decay_rate once each of these epochs is complete (as torch's "
              "MultiStepLR); unset: half and three quarters of the epochs (rounded up)")
    decay_rate: float = _key(0.25, "lr decay factor")
    warmup_epochs: int = _key(0, "linear lr warm-up epochs")
    warmup_lr: float = _key(1e-5, "lr at the start of the warm-up")
    min_lr: float = _key(0.0, "lower bound of the lr")
    sched_on_updates: bool = _key(False, "step the schedule every optimiser step instead of every epoch")
    mixed_precision: Optional[str] = _key(None, MIXED_PRECISION_RULE, MIXED_PRECISION)
    channels_last: bool = _key(False, "channels_last memory format")
    compile: bool = _key(False, "torch.compile the model")
    ema: bool = _key(False, "keep an EMA of the weights (evaluated as ema_test_acc)")
    ema_decay: float = _key(0.999, "EMA decay")
    # sleep-phase weight sharing; unset: the model's own sleep settings (``_hebb`` models)
    sleep: Optional[bool] = _key(None, "sleep-phase weight sharing; unset: iff the model carries sleep settings")
    sleep_every: Optional[int] = _key(None, "sleep every N optimiser steps; unset: the model's")
    sleep_mode: Optional[str] = _key(None, "sharing mode; unset: the model's", SHARING_MODES)
    sleep_pools: Optional[str] = _key(None, "sharing pools; unset: the model's", POOL_MODES)
    sleep_iterations: Optional[int] = _key(None, "Hebbian iterations per sleep; unset: the model's")
    sleep_batch_size: Optional[int] = _key(None, "noise images per Hebbian iteration; unset: the model's")
    sleep_gamma: Optional[float] = _key(None, "Hebbian anchor strength gamma; unset: the model's")
    sleep_lr: Optional[float] = _key(None, "Hebbian step size; unset: the model's")
    sleep_pool_optimizer_state: Optional[bool] = _key(
        None, "also average the optimiser state (Adam's moments, SGD's momentum) over the pools at every share; "
              "unset: the model's (off, as the reference)")
    # run bookkeeping
    seed: int = _key(0, "seed of model init, data order, augmentation and sleep noise")
    output_dir: Optional[str] = _key(None, "run directory; unset: runs/<name>")
    overwrite: bool = _key(False, "replace the run in output_dir")
    resume: bool = _key(False, "continue the run in output_dir from its latest checkpoint")
    checkpoint_every: Optional[int] = _key(None, "checkpoint every N optimiser steps; unset: every epoch")
    keep_checkpoints: int = _key(2, "keep the newest N checkpoints")
    eval_every: Optional[int] = _key(None, "evaluate every N optimiser steps; unset: every epoch")
    log_every: int = _key(20, "write a train record to metrics.jsonl every N optimiser steps")
    report_to: str = _key("none", "experiment trackers, as Accelerate's log_with: all | none | a comma-separated "
                                  "list of tensorboard, wandb, trackio, comet_ml, mlflow, aim, clearml, dvclive, "
                                  "swanlab (logging to output_dir)")
    progress: bool = _key(True, "show a progress bar (stderr) when stdout and stderr are terminals")
    plots: bool = _key(True, "write plots/accuracy.png and plots/snr.png")
    name: Optional[str] = _key(None, "run name; unset: the recipe file's name (demo without a recipe)")

    def to_dict(self) -> Dict[str, Any]:
        """Every key and its value, as a recipe holds them.

        Returns:
            A new dict by field name (lists and dicts deep-copied).
        """
        return dataclasses.asdict(self)

    def sleep_overrides(self) -> Dict[str, Any]:
        """The ``sleep_*`` keys that are set, named as ``SleepConfig`` fields.

        Returns:
            The set keys' values by ``SleepConfig`` field name (keys left unset are absent).
        """
        values = dict(every=self.sleep_every, mode=self.sleep_mode, pools=self.sleep_pools,
                      iterations=self.sleep_iterations, batch_size=self.sleep_batch_size, gamma=self.sleep_gamma,
                      lr=self.sleep_lr, pool_optimizer_state=self.sleep_pool_optimizer_state)
        return {k: v for k, v in values.items() if v is not None}

    def sleep_settings(self, model_sleep: Optional[Mapping[str, Any]]) -> Optional[SleepConfig]:
        """The run's sleep: the model's settings (``_hebb`` models; else the paper's) updated by the ``sleep_*`` keys.

        Args:
            model_sleep: the model's sleep settings as a ``SleepConfig.to_dict()`` dict, or None when it has none.

        Returns:
            The validated ``SleepConfig``, or None when the run does not sleep (``sleep: false``, or unset and
            the model carries no settings).
        """
        if self.sleep is False or (self.sleep is None and model_sleep is None):
            return None
        base = SleepConfig() if model_sleep is None else SleepConfig.from_dict(model_sleep)
        return base.replace(**self.sleep_overrides())

    def with_sleep_resolved(self) -> "TrainConfig":
        """This config with the sleep in effect written out, as ``--print-config`` and a run's recipe.yaml show it.

        Returns:
            A copy whose ``sleep`` is true or false and, when true, whose ``sleep_*`` keys hold the
            settings the run sleeps with: the model's (``MODEL_SLEEP``, by model name) updated by the
            keys that are set.
        """
        model_sleep = MODEL_SLEEP.get(self.model.split(".")[0])
        settings = self.sleep_settings(None if model_sleep is None else model_sleep.to_dict())
        if settings is None:
            return dataclasses.replace(self, sleep=False)
        keys = set(valid_keys())
        resolved = {f"sleep_{k}": v for k, v in settings.to_dict().items() if f"sleep_{k}" in keys}
        return dataclasses.replace(self, sleep=True, **resolved)

    def validate(self) -> "TrainConfig":
        """Checks values that types alone cannot (ranges, choices, sleep settings, milestones, flag conflicts).

        Returns:
            This config, unchanged.

        Raises:
            ValueError: if a value is invalid; the message names the key, what was expected and what was received.
        """
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
                    "max_train_samples", "max_eval_samples"):
            positive(key, allow_none=True)
        for key in ("translate", "test_shift", "num_workers", "warmup_epochs"):
            positive(key, allow_zero=True)
        positive("lr")
        for f in dataclasses.fields(self):
            value, choices = getattr(self, f.name), f.metadata["choices"]
            if choices and value is not None and value not in choices:
                raise ValueError(f"config key {f.name!r}: expected one of {', '.join(choices)}, got {value!r}")
        for key, value in self.sleep_overrides().items():
            try:
                SleepConfig(**{key: value})
            except ValueError as err:
                raise ValueError(f"config key 'sleep_{key}': {err}") from None
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"config key 'val_fraction': expected a value in [0, 1), got {self.val_fraction}")
        positive("object_size", allow_none=True)
        if self.object_size is not None and self.object_size > self.canvas_size:
            raise ValueError(f"config key 'object_size': expected <= canvas_size ({self.canvas_size}), "
                             f"got {self.object_size}")
        if self.canvas_size < 8:
            raise ValueError(f"config key 'canvas_size': expected >= 8 (the digits are 8x8), got {self.canvas_size}")
        if self.overwrite and self.resume:
            raise ValueError("--overwrite and --resume contradict each other: pass one of them")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"config key 'label_smoothing': expected a value in [0, 1), got {self.label_smoothing}")
        if self.sched == "multistep":
            self._check_milestones()
        return self

    def _check_milestones(self) -> None:
        """Epoch milestones must fall inside the run; unset ones need epochs to scale with."""
        if self.decay_milestones is None:
            if self.sched_on_updates:
                raise ValueError("config key 'decay_milestones': with sched_on_updates the milestones count optimiser "
                                 "updates; set them explicitly, e.g. --decay-milestones \"[1000, 1500]\"")
            return
        if self.sched_on_updates:
            return
        late = [m for m in self.decay_milestones if m >= self.epochs]
        if late:
            raise ValueError(
                f"config key 'decay_milestones': {late} of {self.decay_milestones} at or past the end of the "
                f"{self.epochs} epoch{'s' if self.epochs != 1 else ''} would never apply; pass milestones "
                f"below {self.epochs} (--decay-milestones \"{scaled_milestones(self.epochs)}\"), or null to decay "
                f"at half and three quarters of the epochs")


def scaled_milestones(epochs: int) -> List[int]:
    """The milestones of an unset ``decay_milestones``: half and three quarters of ``epochs``, rounded up,
    those inside the run only (none for 1 epoch).

    Args:
        epochs: The run's epochs.

    Returns:
        The ascending epoch milestones.
    """
    return sorted({m for m in (math.ceil(epochs / 2), math.ceil(3 * epochs / 4)) if 0 < m < epochs})


def valid_keys() -> List[str]:
    """The keys a recipe or the command line may set.

    Returns:
        The ``TrainConfig`` field names, in declaration order.
    """
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
    """Returns ``base`` (default: the defaults) updated with ``values``, type-checked and validated.

    Args:
        values: config keys (``-`` or ``_`` spelling) and their values.
        base: the config to update; None: ``TrainConfig()``.
        source: where ``values`` come from, named in the error of an unknown key.

    Returns:
        A new, validated ``TrainConfig`` (ints are accepted for floats, numeric strings too).

    Raises:
        ValueError: if a key is unknown (with the closest valid key), a value has the wrong type, or
            ``validate`` rejects the result.
    """
    hints = get_type_hints(TrainConfig)
    current = (base or TrainConfig()).to_dict()
    for key, value in values.items():
        norm = str(key).replace("-", "_")
        if norm not in hints:
            raise _unknown_key_error(str(key), source)
        current[norm] = _coerce(norm, value, hints[norm])
    return TrainConfig(**current).validate()


def read_yaml(path: Union[str, os.PathLike]) -> Any:
    """A YAML file's content; malformed YAML is a one-line ValueError naming the file, line and column.

    Args:
        path: the YAML file.

    Returns:
        The parsed content (None for an empty file).

    Raises:
        ValueError: if the file is not valid YAML.
        OSError: if the file cannot be read.
    """
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"recipe {str(path)!r} is not valid YAML: {problem}{where}") from None


def load_config(path: Optional[Union[str, os.PathLike]] = None, overrides: Optional[Mapping[str, Any]] = None,
                base: Optional[TrainConfig] = None) -> TrainConfig:
    """Reads a YAML recipe (optional) over ``base`` and applies ``overrides`` on top.

    A recipe without a ``name`` key is named after its file: ``recipes/<dir>/<file>.yaml`` as ``<dir>-<file>``,
    any other file by its stem.

    Args:
        path: the YAML recipe; None: no recipe.
        overrides: command-line keys and values, applied last.
        base: the config the recipe updates; None: ``TrainConfig()``.

    Returns:
        The validated ``TrainConfig``.

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if the recipe is not valid YAML or not a mapping, or a key or value is invalid.
    """
    cfg = base or TrainConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recipe {str(path)!r} does not exist")
        values = read_yaml(path) or {}
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
