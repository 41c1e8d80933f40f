"""The optimiser of ``timm-lc train``: timm's, with torch's fused step where torch has one."""
import inspect

import torch
from timm.optim import create_optimizer_v2, get_optimizer_class

__all__ = ["create_optimizer"]


def create_optimizer(model: torch.nn.Module, opt: str, lr: float, weight_decay: float,
                     momentum: float = 0.9) -> torch.optim.Optimizer:
    """timm's optimiser ``opt`` for ``model``, with ``fused=True`` where torch implements it
    (Adam, AdamW, SGD, Adagrad; timm's own optimisers run as they are).

    The fused step updates each parameter in one pass instead of one pass per elementwise op,
    which matters because the LC nets' weights are large (``lc_resnet20``: 41 M); its result equals
    the default step's up to float rounding.

    Args:
        model: the model whose parameters to optimise.
        opt: timm optimiser name.
        lr: learning rate.
        weight_decay: weight decay.
        momentum: momentum (SGD-type optimisers).

    Returns:
        The optimiser.
    """
    fused = "fused" in inspect.signature(get_optimizer_class(opt)).parameters
    return create_optimizer_v2(model, opt=opt, lr=lr, weight_decay=weight_decay, momentum=momentum,
                               **({"fused": True} if fused else {}))
