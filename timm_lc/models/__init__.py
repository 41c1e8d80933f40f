"""Every timm registration of timm-lc (importing this registers ``lc_resnet*`` and ``lc_converted``)."""
from ._locally_connect import init_lc_kaiming_normal_, locally_connect_
from ._pretrained_cfg import LcPretrainedCfg
from .lc_converted import lc_converted
from .lc_resnet import PAPER_SLEEP_CFG, LcResNet, checkpoint_filter_fn
