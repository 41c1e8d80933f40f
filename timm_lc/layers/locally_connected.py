"""LocallyConnected2d: a Conv2d without weight sharing, for a fixed input size.

Weight layout: ``weight[h, w, c_out, u, v, c_in / groups]`` (shape
``(H_out, W_out, C_out, kh, kw, C_in/groups)``): one filter per output position, position-major
and channel-last so the forward is a single batched matmul with no weight copy. A Conv2d kernel
``k`` (C_out, C_in/groups, kh, kw) maps to every position as ``k.permute(0, 2, 3, 1)`` (see
``kernel_to_filters`` / ``filters_to_kernel``).
``bias[c_out, h, w]`` (shape ``(C_out, H_out, W_out)``) is per position too.
"""
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from timm.layers import register_notrace_module

from .lc_function import lc_output_size, locally_connected2d, locally_connected2d_plain, resolve_padding

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
IntOrPair = Union[int, Tuple[int, int]]


def _shape_str(x: Tensor) -> str:
    """A tensor's shape as '(2, 3, 8, 8)' (TorchScript-friendly)."""
    return "(" + ", ".join([str(d) for d in x.shape]) + ")"


def kernel_to_filters(kernel: Tensor) -> Tensor:
    """Conv2d kernel (C_out, C_in/g, kh, kw) -> one position's LC filters (C_out, kh, kw, C_in/g).

    Args:
        kernel: a Conv2d kernel of shape (C_out, C_in/g, kh, kw).

    Returns:
        A permuted view of ``kernel``, shape (C_out, kh, kw, C_in/g).
    """
    return kernel.permute(0, 2, 3, 1)


def filters_to_kernel(filters: Tensor) -> Tensor:
    """LC filters (..., C_out, kh, kw, C_in/g) -> Conv2d kernel layout (..., C_out, C_in/g, kh, kw).

    Args:
        filters: LC filters with the channel-last layout (..., C_out, kh, kw, C_in/g), e.g. a whole
            ``LocallyConnected2d.weight``.

    Returns:
        A view of ``filters`` in Conv2d layout, shape (..., C_out, C_in/g, kh, kw).
    """
    return filters.movedim(-1, -3)


@register_notrace_module  # an fx leaf: its forward calls a custom autograd Function
class LocallyConnected2d(nn.Module):
    """2D locally connected layer: Conv2d's arguments and output, one filter per position.

    ``input_size`` is the fixed (H, W) the layer accepts. With every position holding the same
    kernel it computes exactly that Conv2d (see ``from_conv``). See the module docstring for the
    weight layout. Each position's filter is initialised like a Conv2d's (see ``reset_parameters``).

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size: size of each position's filter, an int or (kh, kw).
        input_size: the fixed (H, W) of the input, an int or a pair.
        stride: stride of the filter positions.
        padding: an int, a pair, a 4-tuple (left, right, top, bottom) or a string such as 'same'.
        dilation: spacing between filter taps.
        groups: number of blocked connections from input to output channels.
        bias: whether to add a learnable per-position bias (C_out, H_out, W_out).
        padding_mode: one of 'zeros', 'reflect', 'replicate', 'circular'.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Raises:
        ValueError: if ``in_channels`` or ``out_channels`` is not divisible by ``groups``, if
            ``padding_mode`` is unknown, or if ``input_size`` is too small to give any output position.
    """
    __constants__ = ["in_channels", "out_channels", "kernel_size", "stride", "dilation",
                     "groups", "padding_mode", "input_size", "output_size", "pads"]

    def __init__(
            self,
            in_channels: int,
            out_channels: int,
            kernel_size: IntOrPair,
            input_size: IntOrPair,
            stride: IntOrPair = 1,
            padding: Union[str, int, Tuple[int, ...]] = 0,
            dilation: IntOrPair = 1,
            groups: int = 1,
            bias: bool = True,
            padding_mode: str = "zeros",
            device=None,
            dtype=None,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must both be divisible by groups ({groups})")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.input_size = _pair(input_size)
        self.stride = _pair(stride)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.padding_mode = padding_mode
        self.padding = padding if isinstance(padding, str) else (
            tuple(padding) if isinstance(padding, (tuple, list)) and len(padding) == 4 else _pair(padding))
        self.pads = resolve_padding(padding, self.input_size, self.kernel_size, self.stride, self.dilation)
        self.output_size = lc_output_size(self.input_size, self.kernel_size, self.stride, self.dilation, self.pads)
        if min(self.output_size) < 1:
            raise ValueError(f"input_size {self.input_size} is too small for kernel_size {self.kernel_size}, "
                             f"dilation {self.dilation} and padding {self.padding}: output would be {self.output_size}")
        factory = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(
            *self.output_size, out_channels, *self.kernel_size, in_channels // groups, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, *self.output_size, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def fan_in(self) -> int:
        """Inputs of one neuron: C_in / groups * kh * kw."""
        return self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]

    def reset_parameters(self) -> None:
        """Per-position init with Conv2d's default law (kaiming_uniform_, a=sqrt(5)), in place."""
        bound = 1.0 / math.sqrt(self.fan_in)
        if self.weight.device.type != "meta":
            with torch.no_grad():
                self.weight.uniform_(-bound, bound)
                if self.bias is not None:
                    self.bias.uniform_(-bound, bound)

    @torch.no_grad()
    def load_kernel_(self, kernel: Tensor, bias: Optional[Tensor] = None, noise: float = 0.0,
                     generator: Optional[torch.Generator] = None) -> "LocallyConnected2d":
        """Copies a Conv2d kernel (C_out, C_in/groups, kh, kw) to every position, in place.

        ``noise`` adds Gaussian noise with std ``noise * kernel.std()`` (the reference's
        "conv init"); ``bias`` (C_out,) is copied to every position.

        Args:
            kernel: the Conv2d kernel, shape (C_out, C_in/groups, kh, kw).
            bias: the Conv2d bias (C_out,); None zeroes the layer's bias (if it has one).
            noise: std of the added Gaussian noise, relative to the kernel's std; 0 adds none.
            generator: random generator for the noise.

        Returns:
            This layer.

        Raises:
            ValueError: if ``kernel`` does not have the shape above.
        """
        expected = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        if tuple(kernel.shape) != expected:
            raise ValueError(f"kernel must have shape {expected}, got {tuple(kernel.shape)}")
        self.weight.copy_(kernel_to_filters(kernel).to(self.weight.dtype).expand_as(self.weight))
        if noise:
            std = noise * float(kernel.float().std())
            self.weight.add_(torch.randn(self.weight.shape, generator=generator, dtype=self.weight.dtype,
                                         device=self.weight.device), alpha=std)
        if self.bias is not None:
            if bias is None:
                self.bias.zero_()
            else:
                self.bias.copy_(bias.to(self.bias.dtype)[:, None, None].expand_as(self.bias))
        return self

    @classmethod
    def like_conv(cls, conv: nn.Conv2d, input_size: IntOrPair, padding=None,
                  device: Optional[Union[str, torch.device]] = None,
                  dtype: Optional[torch.dtype] = None) -> "LocallyConnected2d":
        """An uninitialised LC layer with ``conv``'s geometry at ``input_size``: the one builder from a conv.

        The layer is built on the meta device and, unless ``device`` is meta, allocated once with
        ``to_empty`` (no random init of a weight the caller overwrites); it takes ``conv``'s train/eval
        mode.

        Args:
            conv: the Conv2d whose channels, kernel, stride, dilation, groups, bias and padding mode it takes.
            input_size: (H, W) of the conv's input.
            padding: the padding to use instead of ``conv.padding`` (e.g. 'same' for ``Conv2dSame``).
            device: where to allocate the weights (default: the conv's); 'meta' allocates nothing.
            dtype: the weights' dtype (default: the conv's).

        Returns:
            The new layer, its weights uninitialised.
        """
        lc = cls(conv.in_channels, conv.out_channels, conv.kernel_size, input_size, stride=conv.stride,
                 padding=conv.padding if padding is None else padding, dilation=conv.dilation,
                 groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                 device="meta", dtype=dtype or conv.weight.dtype)
        target = conv.weight.device if device is None else torch.device(device)
        if target.type != "meta":
            lc = lc.to_empty(device=target)
        return lc.train(conv.training)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, input_size: IntOrPair, noise: float = 0.0,
                  kernel: Optional[Tensor] = None, padding=None,
                  generator: Optional[torch.Generator] = None) -> "LocallyConnected2d":
        """An LC layer computing exactly ``conv`` on inputs of ``input_size`` (plus optional noise).

        Args:
            conv: the convolution to copy (kernel copied to every position, bias to every position).
            input_size: (H, W) of the conv's input.
            noise: std of Gaussian noise added around the copied kernel, relative to the kernel's std.
            kernel: the effective kernel to copy instead of ``conv.weight`` (e.g. ``StdConv2d``'s
                standardised weight).
            padding: the padding to use instead of ``conv.padding`` (e.g. 'same' for ``Conv2dSame``).
            generator: random generator for the noise.

        Returns:
            The new layer, on the conv's device and in its dtype.
        """
        weight = conv.weight if kernel is None else kernel
        return cls.like_conv(conv, input_size, padding).load_kernel_(
            weight.detach(), None if conv.bias is None else conv.bias.detach(), noise=noise, generator=generator)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] != self.input_size[0] \
                or x.shape[3] != self.input_size[1]:
            raise ValueError(
                f"LocallyConnected2d expects input of shape (N, {self.in_channels}, {self.input_size[0]}, "
                f"{self.input_size[1]}) (channels, height, width fixed at construction), "
                f"got {_shape_str(x)}")

    def forward(self, x: Tensor) -> Tensor:
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        self._check_input(x)
        pads = self.pads
        if self.padding_mode != "zeros":  # like nn.Conv2d: pad here, the op zero-pads only
            x, pads = F.pad(x, pads, mode=self.padding_mode), (0, 0, 0, 0)
        if torch.jit.is_scripting():
            out = locally_connected2d_plain(F.pad(x, pads), self.weight, self.bias, self.kernel_size,
                                            self.stride, self.dilation, self.groups)
        else:
            out = self._forward_fast(x, pads)
        return out.squeeze(0) if unbatched else out

    @torch.jit.unused
    def _forward_fast(self, x: Tensor, pads: Tuple[int, int, int, int]) -> Tensor:
        return locally_connected2d(x, self.weight, self.bias, self.stride, pads, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"input_size={self.input_size}, stride={self.stride}")
        if self.pads != (0, 0, 0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s
