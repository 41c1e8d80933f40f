"""timm-lc: locally connected networks for timm, with sleep-phase weight sharing.

Importing ``timm_lc`` registers the ``lc_resnet*`` (and ``lc_converted``) models with timm (timm
has no plugin entry points), so ``import timm_lc`` must come before
``timm.create_model("lc_resnet...")``.
"""
from .layers import LocallyConnected2d, get_lc_kernel, set_lc_kernel
from .convert import (
    ConversionReport, convert_to_lc, convert_to_lc_, lc_conversion_report, lc_to_conv, lc_to_conv_,
    register_conv_handler)
from .sharing import (
    PAPER_SLEEP, SharingReport, SleepConfig, SleepDivergenceWarning, find_pools, pool_ids, share_weights_, sharing_snr)
from .models import LcResNet, PAPER_SLEEP_CFG, checkpoint_filter_fn
from .hub import load_pretrained_model, push_to_hub, save_pretrained
from .train import SleepPhase, TrainConfig, train

__version__ = "0.1.0"

__all__ = [
    "LocallyConnected2d", "get_lc_kernel", "set_lc_kernel",
    "ConversionReport", "convert_to_lc", "convert_to_lc_", "lc_conversion_report", "lc_to_conv", "lc_to_conv_",
    "register_conv_handler",
    "PAPER_SLEEP", "SharingReport", "SleepConfig", "SleepDivergenceWarning", "find_pools", "pool_ids",
    "share_weights_", "sharing_snr",
    "LcResNet", "PAPER_SLEEP_CFG", "checkpoint_filter_fn",
    "load_pretrained_model", "push_to_hub", "save_pretrained",
    "SleepPhase", "TrainConfig", "train",
]
