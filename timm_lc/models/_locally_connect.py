"""Turn a freshly built conv architecture into its locally connected twin, lean on memory.

Unlike ``timm_lc.convert_to_lc`` (an exact copy of trained conv weights), this gives every LC
layer an independent per-position Kaiming init. The conv input sizes come from a forward on
the meta device (no arithmetic), and every LC weight is allocated exactly once, directly on
the target device and dtype, then initialised in place: building the ~1.8 B-parameter
full-width ResNet-18 needs no temporary full-size copy, and on the meta device needs no memory.
"""
import math
from typing import List, Sequence

import torch
from torch import nn

from ..convert import plan_conversion, replace_submodule
from ..layers import LocallyConnected2d, filters_to_kernel

__all__ = ["init_lc_kaiming_normal_", "locally_connect_"]


@torch.no_grad()
def init_lc_kaiming_normal_(
        lc: LocallyConnected2d,
        mode: str = "fan_out",
        nonlinearity: str = "relu",
) -> LocallyConnected2d:
    """Kaiming-normal init of every position's filter, as timm's ResNet inits its convs.

    The fan is that of one position's filters seen as a conv kernel (fan_out = C_out * kh * kw,
    fan_in = C_in / groups * kh * kw): each position gets its own independent draw with the
    conv's law. The bias, if any, is zeroed. In place; no-op on the meta device.

    Args:
        lc: the layer to initialise.
        mode: ``fan_out`` or ``fan_in``, as ``torch.nn.init.kaiming_normal_``.
        nonlinearity: the gain's nonlinearity, as ``torch.nn.init.calculate_gain``.

    Returns:
        The same layer.
    """
    if lc.weight.device.type == "meta":
        return lc
    one_position = filters_to_kernel(lc.weight[0, 0])  # (C_out, C_in/g, kh, kw) view
    fan = nn.init._calculate_correct_fan(one_position, mode)
    std = nn.init.calculate_gain(nonlinearity) / math.sqrt(fan)
    lc.weight.normal_(0.0, std)
    if lc.bias is not None:
        lc.bias.zero_()
    return lc


def locally_connect_(
        model: nn.Module,
        input_size: Sequence[int],
        keep_first: int = 0,
        keep_1x1: bool = False,
        device=None,
        dtype=None,
) -> List[str]:
    """Replaces the model's convs by freshly initialised LocallyConnected2d layers, in place.

    The convs are selected as ``timm_lc.convert.plan_conversion`` selects them; each LC layer is
    allocated once (``LocallyConnected2d.like_conv``) and initialised with ``init_lc_kaiming_normal_``.

    Args:
        model: the conv architecture, freshly built.
        input_size: (C, H, W) the model will accept.
        keep_first: keep the first n convs (forward-call order) convolutional.
        keep_1x1: keep 1x1 convs convolutional.
        device: where to allocate the LC weights (default: each conv's; 'meta' allocates nothing).
        dtype: the LC weights' dtype (default: each conv's).

    Returns:
        The names of the replaced convs.

    Raises:
        ValueError: ``keep_first`` is negative or exceeds the model's convs.
    """
    report, selected = plan_conversion(model, input_size, keep_first, keep_1x1, on_meta=True)
    convs = len(report.layers) + len(report.kept)
    if keep_first > convs:
        raise ValueError(f"keep_first={keep_first} exceeds the model's {convs} convs")
    for name, (size, _, padding) in selected.items():
        conv = model.get_submodule(name)
        lc = LocallyConnected2d.like_conv(conv, size, padding, device=device, dtype=dtype)  # the one allocation of its weights
        replace_submodule(model, name, init_lc_kaiming_normal_(lc))
    return list(selected)
