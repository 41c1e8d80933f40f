"""Conversion between convolutional and locally connected (LC) models.

``convert_to_lc_`` records every ``nn.Conv2d``'s input size with one forward pass, then swaps
each selected conv for a ``LocallyConnected2d`` whose every position holds the conv's
effective kernel, so the converted model computes exactly what the original did.
``lc_to_conv_`` goes back, averaging each LC layer's filters over positions (instant full
sharing), which is exact when the filters are all equal. Both change the model in place (the
trailing underscore, as in torch) and return it; ``convert_to_lc`` / ``lc_to_conv`` are aliases.

A converted timm model is saved and reloaded as the timm architecture ``lc_converted``
(``base`` + ``input_size`` + the selection as model args), so ``timm.create_model("local-dir:DIR")``
rebuilds what ``timm-lc convert`` wrote.

timm's conv subclasses are resolved to their effective kernel and padding (``Conv2dSame``'s
dynamic TF 'same' padding, the weight standardisation of ``StdConv2d`` and friends); other
subclasses can be taught with ``register_conv_handler``.
"""
import fnmatch
import logging
import operator
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from timm.layers import Conv2dSame, ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame
from timm.layers.conv2d_same import Conv2dSameExport

from .layers import LocallyConnected2d, filters_to_kernel

__all__ = [
    "ConversionReport", "ConvertedLayer", "convert_to_lc_", "convert_to_lc", "lc_conversion_report", "lc_to_conv_",
    "lc_to_conv", "record_conv_input_sizes", "register_conv_handler", "plan_conversion", "effective_conv_kernel",
    "replace_submodule", "LC_CONVERTED", "lc_converted_cfg",
]

_logger = logging.getLogger(__name__)

Patterns = Optional[Union[str, Sequence[str]]]
# handler: conv -> (effective kernel (C_out, C_in/g, kh, kw), padding accepted by LocallyConnected2d)
ConvHandler = Callable[[nn.Conv2d], Tuple[Tensor, Union[str, Tuple[int, ...]]]]


def _plain(conv: nn.Conv2d):
    return conv.weight, conv.padding


def _same(conv: nn.Conv2d):
    return conv.weight, "same"


def _standardized(conv: nn.Conv2d, gain: Optional[Tensor] = None) -> Tensor:
    # the same op StdConv2d / ScaledStdConv2d apply in their forward, so the copy is bitwise identical
    return F.batch_norm(
        conv.weight.reshape(1, conv.out_channels, -1), None, None, weight=gain,
        training=True, momentum=0., eps=conv.eps).reshape_as(conv.weight)


def _std(conv: nn.Conv2d):
    return _standardized(conv), "same" if getattr(conv, "same_pad", False) else conv.padding


def _scaled_std(conv: nn.Conv2d):
    gain = (conv.gain * conv.scale).view(-1)
    return _standardized(conv, gain), "same" if getattr(conv, "same_pad", False) else conv.padding


# keyed by the class that defines ``forward``
_CONV_HANDLERS: Dict[Type[nn.Module], ConvHandler] = {
    nn.Conv2d: _plain,
    Conv2dSame: _same,
    Conv2dSameExport: _same,
    StdConv2d: _std,
    StdConv2dSame: _std,
    ScaledStdConv2d: _scaled_std,
    ScaledStdConv2dSame: _scaled_std,
}


def register_conv_handler(cls: Type[nn.Conv2d], handler: ConvHandler) -> None:
    """Teaches conversion a Conv2d subclass: ``handler(conv) -> (effective kernel, padding)``.

    ``padding`` is anything ``LocallyConnected2d`` accepts (int, 2- or 4-tuple, 'same', 'valid').

    Args:
        cls: the Conv2d subclass; the handler applies to convs whose ``forward`` it defines.
        handler: called with a conv of that class, returns its effective kernel
            (C_out, C_in/groups, kh, kw) and padding.

    Raises:
        TypeError: if ``cls`` is not a subclass of ``nn.Conv2d``.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Conv2d)):
        raise TypeError(f"expected an nn.Conv2d subclass, got {cls!r}")
    _CONV_HANDLERS[cls] = handler


def _forward_owner(cls: type, method: str) -> type:
    return next(k for k in cls.__mro__ if method in k.__dict__)


def _handler_for(conv: nn.Conv2d) -> ConvHandler:
    cls = type(conv)
    owner = _forward_owner(cls, "forward")
    handler = _CONV_HANDLERS.get(owner)
    if handler is None or (owner is nn.Conv2d and _forward_owner(cls, "_conv_forward") is not nn.Conv2d):
        raise TypeError(
            f"cannot convert {cls.__module__}.{cls.__qualname__}: it overrides Conv2d's forward and its "
            f"effective kernel/padding are unknown; exclude it or register it with register_conv_handler()")
    return handler


@torch.no_grad()
def effective_conv_kernel(conv: nn.Conv2d) -> Tuple[Tensor, Union[str, Tuple[int, ...]]]:
    """The kernel and padding a Conv2d (or known subclass) really applies in its forward.

    Args:
        conv: a Conv2d, or a subclass known to conversion (see ``register_conv_handler``).

    Returns:
        ``(kernel, padding)``: the detached kernel (C_out, C_in/groups, kh, kw) and a padding
        ``LocallyConnected2d`` accepts.

    Raises:
        TypeError: if ``conv``'s class overrides Conv2d's forward and has no registered handler.
    """
    kernel, padding = _handler_for(conv)(conv)
    return kernel.detach(), padding


def _as_patterns(patterns: Patterns) -> Optional[List[str]]:
    if patterns is None:
        return None
    return [patterns] if isinstance(patterns, str) else list(patterns)


def _matches(name: str, patterns: Optional[List[str]]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns or ())


def _forward_device_dtype(model: nn.Module) -> Tuple[torch.device, torch.dtype]:
    tensors = list(model.parameters()) + list(model.buffers())
    device = next((t.device for t in tensors), torch.device("cpu"))
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.get_default_dtype())
    return device, dtype


def _check_input_size(input_size: Sequence[int]) -> Tuple[int, int, int]:
    try:
        sizes = tuple(operator.index(s) for s in input_size)
    except TypeError:
        sizes = ()
    if len(sizes) != 3 or min(sizes) < 1:
        raise ValueError(f"input_size must be (C, H, W) positive ints, got {input_size!r}")
    return sizes  # type: ignore[return-value]


def _meta_state(model: nn.Module) -> Dict[str, Tensor]:
    named = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    return {k: torch.empty_like(v, device="meta") for k, v in named}


@torch.no_grad()
def _trace_convs(
        model: nn.Module,
        input_size: Tuple[int, int, int],
        on_meta: bool,
) -> Tuple[Dict[str, Tuple[int, int]], Dict[str, int]]:
    """(first-call input (H, W) per conv in call order, number of calls per conv) from one forward."""
    convs = {m: n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    sizes: Dict[str, Tuple[int, int]] = {}
    calls: Dict[str, int] = {}

    def hook(module, args):
        name = convs[module]
        calls[name] = calls.get(name, 0) + 1
        sizes.setdefault(name, (int(args[0].shape[-2]), int(args[0].shape[-1])))

    handles = [m.register_forward_pre_hook(hook) for m in convs]
    modes = {m: m.training for m in model.modules()}
    device, dtype = _forward_device_dtype(model)
    try:
        model.eval()
        if on_meta and device.type != "meta":
            x = torch.zeros(1, *input_size, device="meta", dtype=dtype)
            torch.func.functional_call(model, _meta_state(model), (x,), tie_weights=True, strict=False)
        else:
            model(torch.zeros(1, *input_size, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes.items():
            m.training = mode
    return sizes, calls


def _reuse_error(name: str) -> ValueError:
    return ValueError(
        f"conv {name!r} is called more than once in the forward pass; a locally connected layer has one "
        f"fixed input and one filter per position, so exclude it (exclude=[{name!r}]) or untie it first")


def record_conv_input_sizes(
        model: nn.Module,
        input_size: Sequence[int],
        on_meta: bool = False,
) -> Dict[str, Tuple[int, int]]:
    """Input (H, W) of every Conv2d, in forward-call order, from one forward of a (1, C, H, W) zero tensor.

    The forward runs in eval mode (train/eval flags are restored afterwards). A model on the meta
    device runs on meta; ``on_meta=True`` runs any model on meta (parameters and buffers swapped
    for meta tensors: shapes only, no arithmetic). Convs the forward never reaches are absent.
    A conv called more than once raises ValueError naming it.

    Args:
        model: any torch model.
        input_size: (C, H, W) of the model's input.
        on_meta: run the forward on the meta device (shapes only).

    Returns:
        ``{conv module name: (H, W)}`` of each conv's input, in forward-call order.

    Raises:
        ValueError: if ``input_size`` is not three positive ints, or a conv is called more than once.
    """
    sizes, calls = _trace_convs(model, _check_input_size(input_size), on_meta)
    for name, count in calls.items():
        if count > 1:
            raise _reuse_error(name)
    return sizes


@dataclass
class ConvertedLayer:
    """One conv that is (or would be) converted: where it is, its sizes and parameter counts."""
    name: str
    conv_type: str
    input_size: Tuple[int, int]
    output_size: Tuple[int, int]
    conv_params: int
    lc_params: int


@dataclass
class ConversionReport:
    """What ``convert_to_lc_`` did (or would do): converted layers and parameter counts.

    Args:
        input_size: (C, H, W) the conversion was planned for.
        layers: the converted convs (``ConvertedLayer``), in forward-call order.
        kept: names of the convs the selection kept convolutional.
        unused: names of the convs the forward never reached (not converted).
        params_before: the model's parameter count before conversion.
        params_after: the parameter count after conversion.
    """
    input_size: Tuple[int, int, int]
    layers: List[ConvertedLayer] = field(default_factory=list)
    kept: List[str] = field(default_factory=list)
    unused: List[str] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0

    @property
    def converted(self) -> List[str]:
        """Names of the converted convs, in forward-call order."""
        return [layer.name for layer in self.layers]

    @property
    def params_added(self) -> int:
        """Parameters the conversion adds: ``params_after - params_before``."""
        return self.params_after - self.params_before

    def to_dict(self) -> Dict:
        """The report as plain data, for JSON.

        Returns:
            The dataclass's fields (layers as dicts) plus ``converted`` and ``params_added``.
        """
        out = asdict(self)
        out.update(converted=self.converted, params_added=self.params_added)
        return out

    def __str__(self) -> str:
        return (f"converted {len(self.layers)} conv(s) to LocallyConnected2d at input size {self.input_size} "
                f"(kept {len(self.kept)}, unused {len(self.unused)}); parameters "
                f"{self.params_before:,} -> {self.params_after:,} (+{self.params_added:,})")


def plan_conversion(
        model: nn.Module,
        input_size: Sequence[int],
        keep_first: int = 0,
        keep_1x1: bool = False,
        include: Patterns = None,
        exclude: Patterns = None,
        on_meta: bool = False,
) -> Tuple[ConversionReport, Dict[str, Tuple[Tuple[int, int], Tensor, object]]]:
    """Which convs a conversion replaces, and its report; ``convert_to_lc_`` and the lc_resnet* models
    select through it.

    Args:
        model: any torch model.
        input_size: (C, H, W) of the model's input.
        keep_first: keep the first n convs (forward-call order).
        keep_1x1: keep 1x1 convs.
        include: fnmatch pattern(s) of module names to convert (default: all convs).
        exclude: fnmatch pattern(s) of module names to keep.
        on_meta: trace the forward on the meta device (shapes only).

    Returns:
        ``(report, {name: (input (H, W), effective kernel, padding)})`` in forward order.

    Raises:
        ValueError: a bad ``keep_first`` or ``input_size``, or a selected conv called more than once.
        TypeError: a selected conv is an unknown Conv2d subclass overriding forward.
    """
    if not isinstance(keep_first, int) or keep_first < 0:
        raise ValueError(f"keep_first must be an int >= 0, got {keep_first!r}")
    include, exclude = _as_patterns(include), _as_patterns(exclude)
    input_size = _check_input_size(input_size)
    all_convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    sizes, calls = _trace_convs(model, input_size, on_meta)
    report = ConversionReport(input_size=input_size)
    selected: Dict[str, Tuple[Tuple[int, int], Tensor, object]] = {}
    for index, (name, size) in enumerate(sizes.items()):
        conv = all_convs[name]
        if (index < keep_first or (include is not None and not _matches(name, include))
                or _matches(name, exclude) or (keep_1x1 and conv.kernel_size == (1, 1))):
            report.kept.append(name)
            continue
        if calls[name] > 1:
            raise _reuse_error(name)
        kernel, padding = effective_conv_kernel(conv)  # unknown subclasses fail before anything changes
        selected[name] = (size, kernel, padding)
    report.unused = [n for n in all_convs if n not in sizes]
    report.params_before = sum(p.numel() for p in model.parameters())
    for name, (size, kernel, padding) in selected.items():
        conv = all_convs[name]
        geometry = LocallyConnected2d.like_conv(conv, size, padding, device="meta")  # shapes only: no memory, no init
        conv_params = sum(p.numel() for p in conv.parameters(recurse=False))
        lc_params = sum(p.numel() for p in geometry.parameters())
        report.layers.append(ConvertedLayer(
            name, type(conv).__name__, size, geometry.output_size, conv_params, lc_params))
    report.params_after = report.params_before + sum(l.lc_params - l.conv_params for l in report.layers)
    return report, selected


def lc_conversion_report(
        model: nn.Module,
        input_size: Sequence[int],
        keep_first: int = 0,
        keep_1x1: bool = False,
        include: Patterns = None,
        exclude: Patterns = None,
) -> ConversionReport:
    """What ``convert_to_lc_`` would do, without converting: the forward runs on the meta device.

    Useful to size a conversion (e.g. the ~1.8 B parameters of ResNet-18 at 224x224) before
    allocating it.

    Args:
        model: any torch model; it is not changed.
        input_size: (C, H, W) the converted model would accept.
        keep_first: keep the first n convs (forward-call order).
        keep_1x1: keep 1x1 convs.
        include: fnmatch pattern(s) of module names to convert (default: all convs).
        exclude: fnmatch pattern(s) of module names to keep.

    Returns:
        The ``ConversionReport`` ``convert_to_lc_`` would attach.

    Raises:
        ValueError: a bad ``keep_first`` or ``input_size``, or a selected conv called more than once.
        TypeError: a selected conv is an unknown Conv2d subclass overriding forward.
    """
    report, _ = plan_conversion(model, input_size, keep_first, keep_1x1, include, exclude, on_meta=True)
    return report


def replace_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replaces the submodule at dotted path ``name`` (e.g. 'layer1.0.conv1') by ``module``.

    Args:
        model: the model to change, in place.
        name: dotted path of an existing submodule.
        module: the module to put there.
    """
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def convert_to_lc_(
        model: nn.Module,
        input_size: Sequence[int],
        keep_first: int = 0,
        keep_1x1: bool = False,
        include: Patterns = None,
        exclude: Patterns = None,
        noise: float = 0.0,
        generator: Optional[torch.Generator] = None,
) -> nn.Module:
    """Replaces the model's Conv2d layers by exact ``LocallyConnected2d`` copies, in place.

    Args:
        model: any torch model (timm or not), on any device, meta included.
        input_size: (C, H, W) the converted model will accept (LC layers have fixed input sizes).
        keep_first: keep the first n convs (in forward-call order) convolutional.
        keep_1x1: keep 1x1 convs (e.g. shortcut projections) convolutional.
        include: fnmatch pattern(s) of module names to convert (default: all convs).
        exclude: fnmatch pattern(s) of module names to keep.
        noise: std of Gaussian noise added around the copied kernel, relative to the kernel's std
            (the reference's "conv init"); 0 gives an exact copy.
        generator: random generator for the noise.

    Returns:
        The same model object, changed in place, with ``model.lc_conversion_report`` (a
        ``ConversionReport``); copy the model first (``copy.deepcopy``) to keep the original.

    Raises:
        TypeError: a selected conv is an unknown Conv2d subclass overriding forward.
        ValueError: a selected conv is called more than once in the forward.
    """
    report, selected = plan_conversion(model, input_size, keep_first, keep_1x1, include, exclude)
    for name, (size, kernel, padding) in selected.items():
        conv = model.get_submodule(name)
        lc = LocallyConnected2d.from_conv(conv, size, noise=noise, kernel=kernel, padding=padding, generator=generator)
        replace_submodule(model, name, lc)
    if selected and hasattr(model, "_traits"):  # timm's record of input constraints: LC layers take one size
        model._traits = dict(model._traits, fixed_input_size=True)
    model.lc_conversion_report = report
    _logger.info(str(report))
    return model


convert_to_lc = convert_to_lc_  # alias: converts in place too


def _lc_padding(lc: LocallyConnected2d) -> Tuple[Type[nn.Conv2d], Union[str, Tuple[int, int]]]:
    left, right, top, bottom = lc.pads
    if left == right and top == bottom:
        return nn.Conv2d, (top, left)
    if lc.padding == "same" and lc.padding_mode == "zeros":
        if lc.stride == (1, 1):
            return nn.Conv2d, "same"  # torch puts the odd pixel on the bottom/right, as TF does
        return Conv2dSame, 0
    raise ValueError(f"cannot express the asymmetric padding {lc.pads} (left, right, top, bottom) of "
                     f"{lc!r} with a Conv2d; expected symmetric pads or padding='same'")


@torch.no_grad()
def lc_to_conv_(model: nn.Module) -> nn.Module:
    """Replaces every ``LocallyConnected2d`` by a Conv2d holding its filters' mean over positions.

    The bias is the mean over positions too. Exact when all positions hold the same filter
    (e.g. right after ``convert_to_lc_``, or after full sharing); otherwise it is the instant
    full-sharing limit. Works in place and returns the model (its ``lc_conversion_report``, which
    no longer describes it, is removed); a bare LC layer returns its conv.

    Args:
        model: a model containing ``LocallyConnected2d`` layers, or a single ``LocallyConnected2d``.

    Returns:
        The same model, changed in place; for a bare ``LocallyConnected2d``, the new conv.

    Raises:
        ValueError: if an LC layer has asymmetric padding (other than 'same') that no Conv2d expresses.
    """
    if isinstance(model, LocallyConnected2d):
        return _lc_to_conv_layer(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, LocallyConnected2d):
            replace_submodule(model, name, _lc_to_conv_layer(module))
    model.__dict__.pop("lc_conversion_report", None)
    return model


lc_to_conv = lc_to_conv_  # alias: converts in place too


def _lc_to_conv_layer(lc: LocallyConnected2d) -> nn.Conv2d:
    conv_cls, padding = _lc_padding(lc)
    extra = {} if conv_cls is Conv2dSame else {"padding_mode": lc.padding_mode}
    conv = conv_cls(lc.in_channels, lc.out_channels, lc.kernel_size, stride=lc.stride, padding=padding,
                    dilation=lc.dilation, groups=lc.groups, bias=lc.bias is not None,
                    device=lc.weight.device, dtype=lc.weight.dtype, **extra)
    conv.weight.copy_(filters_to_kernel(lc.weight.mean(dim=(0, 1))))
    if lc.bias is not None:
        conv.bias.copy_(lc.bias.mean(dim=(1, 2)))
    conv.train(lc.training)
    return conv


# ---------------------------------------------------------------------------------------------
# the timm architecture of a converted model (what `timm-lc convert` saves)
# ---------------------------------------------------------------------------------------------

LC_CONVERTED = "lc_converted"
# weight sources of the conv model: a converted model's weights come only from its own checkpoint
_SOURCE_KEYS = ("hf_hub_id", "hf_hub_filename", "url", "file", "state_dict", "source", "tag", "pool_size",
                "test_input_size", "test_crop_pct")


def lc_converted_cfg(base_cfg: Dict, input_size: Sequence[int]) -> Dict:
    """The pretrained cfg of a converted model (architecture ``lc_converted``).

    Args:
        base_cfg: the conv model's pretrained cfg.
        input_size: (C, H, W) the converted model accepts.

    Returns:
        The conv model's preprocessing (mean, std, crop, classifier, labels) at the fixed LC
        ``input_size``, without the conv model's weight source.

    Raises:
        ValueError: ``input_size`` is not three positive ints.
    """
    cfg = {k: v for k, v in dict(base_cfg).items() if k not in _SOURCE_KEYS}
    cfg.update(architecture=LC_CONVERTED, input_size=_check_input_size(input_size), fixed_input_size=True)
    return cfg
