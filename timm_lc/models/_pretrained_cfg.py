"""The pretrained cfg of timm-lc's models: timm's plus the sleep-phase settings a run was trained with.

A run's sleep settings have one place in its ``config.json``: ``pretrained_cfg["sleep"]``. The
builders of every timm-lc architecture (``lc_resnet*``, ``lc_converted``) read a cfg dict through
``lc_pretrained_cfg`` (timm's ``PretrainedCfg`` has no ``sleep`` field) and give the settings back
as ``model.sleep_cfg`` with ``attach_sleep_cfg``.
"""
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

from torch import nn
from timm.models import PretrainedCfg

from timm_lc_settings.sleep import SleepConfig

__all__ = ["LcPretrainedCfg", "lc_pretrained_cfg", "attach_sleep_cfg"]


@dataclass
class LcPretrainedCfg(PretrainedCfg):
    """timm's PretrainedCfg plus the sleep-phase settings a ``_hebb`` model is trained with."""
    sleep: Optional[Dict[str, Any]] = None


def lc_pretrained_cfg(
        cfg: Optional[Union[str, Dict[str, Any], PretrainedCfg]],
) -> Optional[Union[str, PretrainedCfg]]:
    """A cfg dict (e.g. read back from a config.json) as an ``LcPretrainedCfg``, keeping its ``sleep`` entry.

    Args:
        cfg: what a timm builder receives as ``pretrained_cfg`` (None, a tag, a dict or a cfg).

    Returns:
        ``cfg`` itself unless it is a dict, else the ``LcPretrainedCfg`` of its fields.
    """
    return LcPretrainedCfg(**cfg) if isinstance(cfg, dict) else cfg


def attach_sleep_cfg(model: nn.Module) -> nn.Module:
    """Sets ``model.sleep_cfg`` from ``model.pretrained_cfg["sleep"]`` (validated; None when absent).

    Args:
        model: a model built by ``timm.models.build_model_with_cfg``.

    Returns:
        The same model.

    Raises:
        ValueError: the recorded sleep settings are invalid.
    """
    sleep = (getattr(model, "pretrained_cfg", None) or {}).get("sleep")
    model.sleep_cfg = SleepConfig.from_dict(sleep).to_dict() if sleep is not None else None
    return model
