"""timm-lc: locally connected networks for timm, with sleep-phase weight sharing.

Importing ``timm_lc`` registers the ``lc_resnet*`` models with timm.
"""
from .layers import LocallyConnected2d

__version__ = "0.1.0"
