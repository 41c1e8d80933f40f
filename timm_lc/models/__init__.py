"""timm registrations of locally connected models (importing this registers ``lc_resnet*``)."""
from ._locally_connect import init_lc_kaiming_normal_, locally_connect_
from .lc_resnet import PAPER_SLEEP_CFG, LcResNet, checkpoint_filter_fn
