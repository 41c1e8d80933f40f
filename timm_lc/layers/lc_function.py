"""The locally connected 2D operator as a functional op with a lean custom autograd path.

An LC layer gives every output position p its own filter, so its forward is one batched
matmul over positions: ``out[p] = W[p] @ cols[p]``, with ``cols[p]`` the (kh * kw * C_in/groups,
batch) input patches that p sees. The input is first laid out as (H, W, C, B), so every patch
row (one kernel offset, all channels, all images) is one contiguous block and gathering the
patches is a sequence of block copies. Backward gathers them again from the saved input
instead of keeping the k^2-times larger patch tensor alive between forward and backward, and
reuses one patch-sized buffer for the weight and input gradients.

On the CPU (groups = 1) the patches are never materialised at all: for each output row and
kernel row, the patches of all positions in that row are overlapping windows of one
contiguous input row, so a strided view feeds the batched matmul directly and every
intermediate stays cache-sized ("row" path). Grouped layers use the gather path, which
issues a handful of large kernels instead of one per row, and CUDA uses implicit-GEMM Triton
kernels that read the input directly (``triton_lc``; the gather path when triton is missing).
``set_lc_kernel`` / ``TIMM_LC_KERNEL`` override the choice (see ``kernels``).
"""
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from timm.layers import get_same_padding
from torch import Tensor
from torch.nn.modules.utils import _pair

from .kernels import get_lc_kernel, triton_kernels, triton_unusable


Padding = Union[str, int, Tuple[int, ...]]


def resolve_padding(
        padding: Padding,
        input_size: Tuple[int, int],
        kernel_size: Tuple[int, int],
        stride: Tuple[int, int],
        dilation: Tuple[int, int],
) -> Tuple[int, int, int, int]:
    """Explicit ``F.pad`` amounts (left, right, top, bottom) for Conv2d-style ``padding``.

    'same' keeps ``ceil(size / stride)`` outputs with the extra pixel on the bottom/right, as
    torch (stride 1) and TF / timm's ``Conv2dSame`` (any stride) do; a 4-tuple is taken as
    explicit (left, right, top, bottom) amounts.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding != "same":
            raise ValueError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
        pad_h, pad_w = (get_same_padding(n, k, s, d) for n, k, s, d in zip(input_size, kernel_size, stride, dilation))
        return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return padding[1], padding[1], padding[0], padding[0]
    if len(padding) == 4:
        return padding  # type: ignore[return-value]
    raise ValueError(f"padding must have 2 (h, w) or 4 (left, right, top, bottom) entries, got {padding}")


def lc_output_size(
        input_size: Tuple[int, int],
        kernel_size: Tuple[int, int],
        stride: Tuple[int, int],
        dilation: Tuple[int, int],
        pads: Tuple[int, int, int, int],
) -> Tuple[int, int]:
    """Output (H, W) of a conv / LC layer with explicit (left, right, top, bottom) pads."""
    left, right, top, bottom = pads
    padded = (input_size[0] + top + bottom, input_size[1] + left + right)
    return tuple((p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(padded, kernel_size, stride, dilation))


def gather_patches(
        x_hwcb: Tensor,
        kernel_size: Tuple[int, int],
        stride: Tuple[int, int],
        dilation: Tuple[int, int],
        output_size: Tuple[int, int],
        groups: int,
) -> Tensor:
    """Patches of a padded (H, W, C, B) input as (H_out * W_out * groups, kh * kw * C/groups, B)."""
    hp, wp, c, b = x_hwcb.shape
    kh, kw = kernel_size
    ho, wo = output_size
    cg = c // groups
    row, col = wp * c * b, c * b
    windows = x_hwcb.as_strided(
        (ho, wo, groups, kh, kw, cg, b),
        (stride[0] * row, stride[1] * col, cg * b, dilation[0] * row, dilation[1] * col, b, 1),
        x_hwcb.storage_offset(),
    )
    return windows.reshape(ho * wo * groups, kh * kw * cg, b)


def scatter_patches_(
        grad_x_hwcb: Tensor,
        grad_cols: Tensor,
        kernel_size: Tuple[int, int],
        stride: Tuple[int, int],
        dilation: Tuple[int, int],
        output_size: Tuple[int, int],
        groups: int,
) -> Tensor:
    """Adds patch gradients onto the padded (H, W, C, B) input gradient: gather_patches' adjoint."""
    hp, wp, c, b = grad_x_hwcb.shape
    kh, kw = kernel_size
    ho, wo = output_size
    cg = c // groups
    cols = grad_cols.view(ho, wo, groups, kh, kw, cg, b)
    target = grad_x_hwcb.view(hp, wp, groups, cg, b)
    h_span = stride[0] * (ho - 1) + 1
    w_span = stride[1] * (wo - 1) + 1
    for u in range(kh):
        h0 = u * dilation[0]
        for v in range(kw):
            w0 = v * dilation[1]
            target[h0:h0 + h_span:stride[0], w0:w0 + w_span:stride[1]] += cols[:, :, :, u, v]
    return grad_x_hwcb


def weight_matrices(weight: Tensor, groups: int) -> Tensor:
    """(H_out, W_out, C_out, kh, kw, C_in/groups) weight as (positions * groups, C_out/groups, K)."""
    ho, wo, c_out = weight.shape[:3]
    return weight.reshape(ho * wo * groups, c_out // groups, -1)


def _bias_columns(bias: Tensor, groups: int) -> Tensor:
    """(C_out, H_out, W_out) bias as (positions * groups, C_out/groups, 1) for baddbmm."""
    c_out, ho, wo = bias.shape
    return bias.permute(1, 2, 0).reshape(ho * wo * groups, c_out // groups, 1)


def _lc_matmul(x_hwcb: Tensor, weight: Tensor, bias: Optional[Tensor], kernel_size: Tuple[int, int],
               stride: Tuple[int, int], dilation: Tuple[int, int], groups: int) -> Tensor:
    """The LC op on an (H, W, C, B) input; returns the output as (B, C_out, H_out, W_out) view."""
    ho, wo, c_out = weight.shape[:3]
    cols = gather_patches(x_hwcb, kernel_size, stride, dilation, (ho, wo), groups)
    w = weight_matrices(weight, groups)
    out = torch.bmm(w, cols) if bias is None else torch.baddbmm(_bias_columns(bias, groups), w, cols)
    return out.view(ho, wo, c_out, -1).permute(3, 2, 0, 1)


def _column_runs(kernel_w: int, dilation_w: int) -> List[Tuple[int, int]]:
    """(first kernel column, number of columns) runs whose input pixels are contiguous."""
    return [(0, kernel_w)] if dilation_w == 1 else [(v, 1) for v in range(kernel_w)]


def _row_windows(x_hwcb: Tensor, row: int, first_col: int, num_cols: int, out_w: int,
                 stride_w: int, dilation_w: int) -> Tensor:
    """Patches of one input row for all out_w positions: an (out_w, num_cols * C, B) strided view."""
    _, wp, c, b = x_hwcb.shape
    offset = x_hwcb.storage_offset() + (row * wp + first_col * dilation_w) * c * b
    return x_hwcb.as_strided((out_w, num_cols * c, b), (stride_w * c * b, b, 1), offset)


def _forward_rows(x_hwcb: Tensor, weight: Tensor, bias: Optional[Tensor], kernel_size: Tuple[int, int],
                  stride: Tuple[int, int], dilation: Tuple[int, int]) -> Tensor:
    """Row-by-row LC forward for groups = 1 without materialised patches; (ho, wo, C_out, B) result."""
    ho, wo, c_out = weight.shape[:3]
    out = x_hwcb.new_empty(ho, wo, c_out, x_hwcb.shape[-1])
    if bias is not None:
        out.copy_(bias.permute(1, 2, 0)[..., None].expand_as(out))
    runs = _column_runs(kernel_size[1], dilation[1])
    for h in range(ho):
        first = bias is None
        for u in range(kernel_size[0]):
            row = h * stride[0] + u * dilation[0]
            for v0, nv in runs:
                cols = _row_windows(x_hwcb, row, v0, nv, wo, stride[1], dilation[1])
                w = weight[h, :, :, u, v0:v0 + nv].flatten(-2)
                if first:
                    torch.bmm(w, cols, out=out[h])
                    first = False
                else:
                    out[h].baddbmm_(w, cols)
    return out


def _backward_rows(x_hwcb: Tensor, weight: Tensor, g: Tensor, need_x: bool, need_w: bool,
                   kernel_size: Tuple[int, int], stride: Tuple[int, int], dilation: Tuple[int, int]):
    """Row-by-row input and weight gradients for groups = 1; g is (ho, wo, C_out, B)."""
    ho, wo, c_out = weight.shape[:3]
    c = x_hwcb.shape[2]
    grad_w = torch.empty_like(weight) if need_w else None
    grad_x = torch.zeros_like(x_hwcb) if need_x else None
    runs = _column_runs(kernel_size[1], dilation[1])
    nv = runs[0][1]  # all runs have the same length: one reused buffer each, no per-row allocations
    grad_w_buf = g.new_empty(wo, c_out, nv * c) if need_w else None
    grad_cols_buf = g.new_empty(wo, nv * c, g.shape[-1]) if need_x else None
    span = stride[1] * (wo - 1) + 1
    for h in range(ho):
        g_row = g[h]
        for u in range(kernel_size[0]):
            row = h * stride[0] + u * dilation[0]
            for v0, nv in runs:
                if need_w:
                    cols = _row_windows(x_hwcb, row, v0, nv, wo, stride[1], dilation[1])
                    torch.bmm(g_row, cols.transpose(1, 2), out=grad_w_buf)
                    grad_w[h, :, :, u, v0:v0 + nv] = grad_w_buf.view(wo, c_out, nv, c)
                if need_x:
                    w = weight[h, :, :, u, v0:v0 + nv].flatten(-2)
                    grad_cols = torch.bmm(w.transpose(1, 2), g_row, out=grad_cols_buf).view(wo, nv, c, -1)
                    target = grad_x[row]
                    for i in range(nv):
                        start = (v0 + i) * dilation[1]
                        target[start:start + span:stride[1]] += grad_cols[:, i]
    return grad_x, grad_w


def _use_rows(x: Tensor, groups: int) -> bool:
    return groups == 1 and x.device.type == "cpu"


def select_kernel(x: Tensor, groups: int) -> str:
    """The kernel (``rows``, ``gather`` or ``triton``) the LC op runs on ``x`` under the current selection.

    ``auto`` never picks Triton's (slow) interpreter; a kernel selected by name that cannot run
    on ``x`` is a ValueError saying why.
    """
    name = get_lc_kernel()
    if name == "auto":
        if x.device.type == "cuda" and triton_unusable(x) is None and not triton_kernels().INTERPRETED:
            return "triton"
        return "rows" if _use_rows(x, groups) else "gather"
    if name == "rows" and groups != 1:
        raise ValueError(f"LC kernel 'rows' needs groups == 1, got groups={groups}; select 'gather' or 'auto'")
    if name == "triton":
        reason = triton_unusable(x)
        if reason is not None:
            raise ValueError(f"LC kernel 'triton' cannot run here: {reason}; select 'gather' or 'auto'")
    return name


def _output_memory_format(x: Tensor) -> torch.memory_format:
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class LocallyConnected2dFunction(torch.autograd.Function):
    """Custom autograd for the LC op on an already padded (B, C, H, W) input."""

    @staticmethod
    def forward(ctx, x, weight, bias, kernel_size, stride, dilation, groups):
        kernel = select_kernel(x, groups)
        x_hwcb = x.permute(2, 3, 1, 0).contiguous()
        if kernel == "rows":
            out = _forward_rows(x_hwcb, weight, bias, kernel_size, stride, dilation).permute(3, 2, 0, 1)
        elif kernel == "triton":
            out = triton_kernels().lc_forward(x_hwcb, weight, bias, stride, dilation, groups).permute(3, 2, 0, 1)
        else:
            out = _lc_matmul(x_hwcb, weight, bias, kernel_size, stride, dilation, groups)
        ctx.save_for_backward(x_hwcb, weight)
        ctx.has_bias = bias is not None
        ctx.conf = (kernel_size, stride, dilation, groups)
        ctx.kernel = kernel
        return out.contiguous(memory_format=_output_memory_format(x))

    @staticmethod
    def backward(ctx, grad_out):
        x_hwcb, weight = ctx.saved_tensors
        kernel_size, stride, dilation, groups = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        ho, wo, c_out = weight.shape[:3]
        # (B, C_out, ho, wo) -> (ho * wo * groups, C_out / groups, B)
        g = grad_out.permute(2, 3, 1, 0).contiguous().view(ho * wo * groups, c_out // groups, -1)
        grad_x = grad_w = grad_b = None
        if need_b and ctx.has_bias:
            grad_b = g.sum(-1).view(ho, wo, c_out).permute(2, 0, 1).contiguous()
        if (need_w or need_x) and ctx.kernel == "rows":
            grad_x_hwcb, grad_w = _backward_rows(x_hwcb, weight, g.view(ho, wo, c_out, -1), need_x, need_w,
                                                 kernel_size, stride, dilation)
            grad_x = None if grad_x_hwcb is None else grad_x_hwcb.permute(3, 2, 0, 1)
        elif (need_w or need_x) and ctx.kernel == "triton":
            kernels, g = triton_kernels(), g.view(ho * wo, c_out, -1)
            if need_w:
                grad_w = kernels.lc_weight_grad(g, x_hwcb, weight, stride, dilation, groups)
            if need_x:
                grad_x = kernels.lc_input_grad(g, weight, x_hwcb.shape, stride, dilation, groups).permute(3, 2, 0, 1)
        elif need_w or need_x:
            cols = None
            if need_w:
                cols = gather_patches(x_hwcb, kernel_size, stride, dilation, (ho, wo), groups)
                grad_w = torch.bmm(g, cols.transpose(1, 2)).view(weight.shape)
            if need_x:
                w_t = weight_matrices(weight, groups).transpose(1, 2)
                # reuse the patch buffer, unless it is a view of the saved input (1x1, stride 1)
                reusable = cols is not None and cols.data_ptr() != x_hwcb.data_ptr()
                grad_cols = torch.bmm(w_t, g, out=cols) if reusable else torch.bmm(w_t, g)
                grad_x_hwcb = scatter_patches_(torch.zeros_like(x_hwcb), grad_cols, kernel_size, stride,
                                               dilation, (ho, wo), groups)
                grad_x = grad_x_hwcb.permute(3, 2, 0, 1)
        return grad_x, grad_w, grad_b, None, None, None, None


def locally_connected2d_plain(
        x: Tensor,
        weight: Tensor,
        bias: Optional[Tensor],
        kernel_size: Tuple[int, int],
        stride: Tuple[int, int],
        dilation: Tuple[int, int],
        groups: int,
) -> Tensor:
    """Same op in plain autograd-tracked ops: the TorchScript path (keeps the patches for backward)."""
    x_hwcb = x.permute(2, 3, 1, 0).contiguous()
    return _lc_matmul(x_hwcb, weight, bias, kernel_size, stride, dilation, groups).contiguous()


def locally_connected2d(
        x: Tensor,
        weight: Tensor,
        bias: Optional[Tensor] = None,
        stride: Union[int, Tuple[int, int]] = 1,
        padding: Padding = 0,
        dilation: Union[int, Tuple[int, int]] = 1,
        groups: int = 1,
) -> Tensor:
    """Locally connected 2D op: ``F.conv2d``'s arguments, but a separate filter at every output position.

    Args:
        x: input of shape (B, C_in, H, W), any memory format (a channels_last input gives a
            channels_last output).
        weight: (H_out, W_out, C_out, kh, kw, C_in / groups), position-major and channel-last:
            ``weight[h, w]`` is the filter bank of output position (h, w) (a conv kernel ``k``
            maps to ``k.permute(0, 2, 3, 1)`` at every position).
        bias: optional (C_out, H_out, W_out), one bias per channel and position.
        stride, dilation: int or (h, w), as in ``F.conv2d``.
        padding: zero padding, as in ``F.conv2d`` (int, (h, w), 'same', 'valid'), or an explicit
            (left, right, top, bottom) 4-tuple as ``F.pad`` takes it ('same' with an even kernel or
            a stride needs one).
        groups: as in ``F.conv2d``; C_in and C_out must both be divisible by it.

    Returns:
        (B, C_out, H_out, W_out); (H_out, W_out) must equal ``weight.shape[:2]``.

    Under autocast the inputs are cast once to the autocast dtype (before any patch exists)
    so the batched matmuls run in low precision. Backward recomputes the patches from the
    saved input instead of keeping them: memory stays at the input's size.
    """
    if x.dim() != 4 or weight.dim() != 6:
        raise ValueError(f"locally_connected2d expects a 4-D input (B, C_in, H, W) and a 6-D weight (H_out, W_out, "
                         f"C_out, kh, kw, C_in/groups), got {tuple(x.shape)} and {tuple(weight.shape)}")
    kernel_size = (weight.shape[3], weight.shape[4])
    stride, dilation = _pair(stride), _pair(dilation)
    pads = resolve_padding(padding, (x.shape[-2], x.shape[-1]), kernel_size, stride, dilation)
    expected = lc_output_size((x.shape[-2], x.shape[-1]), kernel_size, stride, dilation, pads)
    if tuple(weight.shape[:2]) != expected or x.shape[1] != weight.shape[5] * groups:
        raise ValueError(f"locally_connected2d: input {tuple(x.shape)} with kernel {kernel_size}, stride {stride}, "
                         f"padding {pads}, dilation {dilation} and groups {groups} needs a weight of shape "
                         f"({expected[0]}, {expected[1]}, C_out, {kernel_size[0]}, {kernel_size[1]}, "
                         f"{x.shape[1] // groups}), got {tuple(weight.shape)}")
    if pads != (0, 0, 0, 0):
        x = F.pad(x, pads)
    device_type = x.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
        with torch.autocast(device_type, enabled=False):
            return LocallyConnected2dFunction.apply(x, weight, bias, kernel_size, stride, dilation, groups)
    return LocallyConnected2dFunction.apply(x, weight, bias, kernel_size, stride, dilation, groups)
