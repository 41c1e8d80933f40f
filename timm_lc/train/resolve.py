"""A run's configuration as the run will use it: what depends on the model and the machine, filled in.

The schema itself (``TrainConfig``, recipes, validation) is ``timm_lc_settings.train``, which the
command line reads without torch; this module adds what needs torch, timm or Accelerate.
"""
import dataclasses
import os
from typing import List, Optional, Set, Union

import timm
import torch
import yaml
from accelerate.tracking import get_available_trackers
from accelerate.utils import LoggerType, parse_flag_from_env
from timm_lc_settings.train import TrainConfig, scaled_milestones

from .._io import write_text_atomic

__all__ = ["resolve_config", "save_config", "cpu_flags", "cpu_has_amx_bf16", "trackers_for"]


def save_config(cfg: TrainConfig, path: Union[str, os.PathLike]) -> None:
    """Writes ``cfg`` as YAML, atomically.

    Args:
        cfg: the configuration to write.
        path: the YAML file (a run's ``recipe.yaml``).
    """
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def cpu_flags(cpuinfo: Union[str, os.PathLike] = "/proc/cpuinfo") -> Set[str]:
    """The CPU's feature flags, as Linux's cpuinfo lists them (``avx2``, ``avx512_bf16``, ``amx_bf16``, ...).

    Args:
        cpuinfo: the cpuinfo file to read.

    Returns:
        The flags of every ``flags`` line; empty when the file cannot be read (another OS).
    """
    try:
        with open(cpuinfo) as f:
            return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[-1].split()}
    except OSError:
        return set()


def cpu_has_amx_bf16(cpuinfo: Union[str, os.PathLike] = "/proc/cpuinfo") -> bool:
    """Whether the CPU has AMX-BF16 matrix units, which decides whether a CPU run defaults to bf16 mixed
    precision.

    Args:
        cpuinfo: the cpuinfo file to read.

    Returns:
        True if its flags list ``amx_bf16``; False otherwise or when the file cannot be read.
    """
    return "amx_bf16" in cpu_flags(cpuinfo)


def _default_mixed_precision(on_cpu: bool) -> str:
    """The precision of an unset ``mixed_precision`` (MIXED_PRECISION_RULE)."""
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")  # what `accelerate launch` passes on
    if launcher:
        return launcher.lower()
    return "bf16" if on_cpu and cpu_has_amx_bf16() else "no"


def _model_input_size(model: str) -> Optional[int]:
    """The square input size of a timm model's pretrained cfg; ValueError for an unknown model."""
    if not timm.is_model(model.split(".")[0]):
        raise ValueError(f"unknown model {model!r}; expected a timm model name, e.g. one of "
                         f"{', '.join(timm.list_models('lc_resnet*'))}")
    input_size = getattr(timm.models.get_pretrained_cfg(model), "input_size", None)
    return int(input_size[-1]) if input_size else None


def trackers_for(report_to: str) -> Optional[Union[str, List[str]]]:
    """Accelerate's ``log_with`` for ``report_to``: None, "all", or the named trackers (each checked
    known and installed, so a typo or a missing package fails before the run starts).

    Args:
        report_to: comma-separated tracker names, ``all``, or ``none`` / empty.

    Returns:
        None for no tracker, ``"all"``, or the list of lower-cased tracker names.

    Raises:
        ValueError: if a name is not an Accelerate tracker or its package is not installed.
    """
    names = [n.strip().lower() for n in report_to.split(",") if n.strip()]
    if names in ([], ["none"]):
        return None
    if names == ["all"]:
        return "all"
    known = [t for t in LoggerType.list() if t != "all"]
    installed = {LoggerType(t).value for t in get_available_trackers()}
    for name in names:
        if name not in known:
            raise ValueError(f"config key 'report_to': unknown tracker {name!r}; expected all, none or a "
                             f"comma-separated list of {', '.join(known)}")
        if name not in installed:
            raise ValueError(f"config key 'report_to': tracker {name!r} is not installed (pip install {name})")
    return names


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with what depends on the model and the machine filled in, as the run will use it.

    ``img_size``: the model's pretrained cfg ``input_size`` unless set (the demo and ``object_size``
    placements: the canvas);
    ``mixed_precision``: MIXED_PRECISION_RULE unless set; ``decay_milestones``: ``scaled_milestones``
    unless set (they scale with ``epochs``); ``sleep`` and the ``sleep_*`` keys: the sleep in effect
    (``TrainConfig.with_sleep_resolved``).

    Args:
        cfg: a validated configuration.

    Returns:
        The resolved copy.

    Raises:
        ValueError: an unknown model or tracker, or an invalid value.
    """
    cfg.validate()
    native = _model_input_size(cfg.model)
    img_size = cfg.img_size or (None if cfg.dataset == "demo" or cfg.object_size else native)  # the canvas
    on_cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    precision = cfg.mixed_precision or _default_mixed_precision(on_cpu)
    trackers_for(cfg.report_to)
    milestones = cfg.decay_milestones
    if milestones is None:  # (a multistep schedule on updates was refused by validate)
        milestones = [] if cfg.sched_on_updates else scaled_milestones(cfg.epochs)
    return dataclasses.replace(cfg.with_sleep_resolved(), img_size=img_size, mixed_precision=precision,
                               decay_milestones=milestones).validate()
