"""The timm architecture ``lc_converted``: any timm model converted with ``timm_lc.convert_to_lc_``.

``timm-lc convert`` saves a converted model as this architecture (``base`` + ``input_size`` + the
conversion's selection as model args), so ``timm.create_model("local-dir:DIR", pretrained=True)``
rebuilds what it wrote.
"""
from typing import Any, Dict, Optional, Sequence

from torch import nn
from timm.models import build_model_with_cfg, create_model, get_pretrained_cfg, register_model

from ..convert import LC_CONVERTED, Patterns, convert_to_lc_, lc_converted_cfg
from ._pretrained_cfg import attach_sleep_cfg, lc_pretrained_cfg

__all__ = ["lc_converted"]


def _build_converted(base: str, input_size: Sequence[int], keep_first: int, keep_1x1: bool, include: Patterns,
                     exclude: Patterns, **kwargs: Any) -> nn.Module:
    model = create_model(base, **kwargs)
    return convert_to_lc_(model, input_size, keep_first=keep_first, keep_1x1=keep_1x1, include=include,
                          exclude=exclude)


@register_model
def lc_converted(pretrained: bool = False, base: str = "resnet18", input_size: Sequence[int] = (3, 224, 224),
                 keep_first: int = 0, keep_1x1: bool = False, include: Patterns = None, exclude: Patterns = None,
                 pretrained_cfg: Optional[Dict[str, Any]] = None, **kwargs: Any) -> nn.Module:
    """timm model ``base`` (any timm name) converted with ``convert_to_lc_`` at ``input_size``.

    The weights are an exact LC copy of the conv model's init; ``pretrained=True`` loads a saved
    converted checkpoint (``timm.create_model("local-dir:DIR", pretrained=True)``). The model's
    ``sleep_cfg`` is the ``sleep`` entry of its pretrained cfg (None when it has none).

    Args:
        pretrained: load the checkpoint the pretrained cfg points to.
        base: the timm model name to convert.
        input_size: (C, H, W) the converted model accepts.
        keep_first: keep the first n convs (forward-call order) convolutional.
        keep_1x1: keep 1x1 convs convolutional.
        include: fnmatch pattern(s) of module names to convert (default: all convs).
        exclude: fnmatch pattern(s) of module names to keep.
        pretrained_cfg: the cfg (dict) to build with; default: ``base``'s at ``input_size``.
        **kwargs: passed to ``timm.create_model(base, ...)``.

    Returns:
        The converted model.
    """
    if pretrained_cfg is None:
        pretrained_cfg = lc_converted_cfg(get_pretrained_cfg(base).to_dict(), input_size)
    model = build_model_with_cfg(
        _build_converted, LC_CONVERTED, pretrained, pretrained_cfg=lc_pretrained_cfg(pretrained_cfg),
        kwargs_filter=("img_size",), base=base, input_size=tuple(input_size), keep_first=keep_first,
        keep_1x1=keep_1x1, include=include, exclude=exclude, **kwargs)
    return attach_sleep_cfg(model)
