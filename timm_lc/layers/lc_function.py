"""The locally connected 2D operator: a functional op over two torch.library custom ops.

An LC layer gives every output position p its own filter, so its forward is one batched
matmul over positions: ``out[p] = W[p] @ cols[p]``, with ``cols[p]`` the (kh * kw * C_in/groups,
batch) input patches that p sees. The input is first copied to a zero-padded (H, W, C, B)
layout, so every patch row (one kernel offset, all channels, all images) is one contiguous
block and gathering the patches is a sequence of block copies. The patches are gathered a
chunk of output rows at a time into one reused buffer of about ``CHUNK_BYTES`` (so memory stays
near the input's size and every kernel is large: few parallel regions, which keeps the op
fast when another process takes a core), and backward gathers them again from the input
(saved by reference) instead of keeping the k^2-times larger patch tensor alive. On CUDA
implicit-GEMM Triton kernels read the input directly (``triton_lc``), once they passed their
first-use check on the geometry (``first_use``); ``set_lc_kernel`` / ``TIMM_LC_KERNEL``
override the choice (see ``kernels``).

``timm_lc::locally_connected2d`` (the forward) and ``timm_lc::locally_connected2d_backward``
(input and weight gradients) are custom operators with fake implementations and autograd
formulas, so ``torch.compile`` traces the op, forward and backward, into one graph; the
backward op has its own formula (the gradients are bilinear: LC ops again), so double backward
works to any order.
"""
import time
from typing import List, Optional, Sequence, Tuple, Union

import torch
from timm.layers import get_same_padding
from torch import Tensor
from torch.nn.modules.utils import _pair

from . import first_use, kernels
from .kernels import get_lc_kernel, triton_kernels, triton_unusable

CHUNK_BYTES = 8 << 20  # patch buffer per chunk of output rows: large kernels, cache-friendly reuse
_TRANSPOSE_ROWS = 1024  # a 2-D CPU transpose copies this many rows at a time (cache-sized blocks)

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


def _transpose_2d(a: Tensor) -> Tensor:
    """``a.t().contiguous()`` for a 2-D tensor; on the CPU in row blocks, which caches far better."""
    if a.device.type != "cpu" or a.shape[0] <= _TRANSPOSE_ROWS:
        return a.t().contiguous()
    out = a.new_empty(a.shape[1], a.shape[0])
    for i in range(0, a.shape[0], _TRANSPOSE_ROWS):
        out[:, i:i + _TRANSPOSE_ROWS].copy_(a[i:i + _TRANSPOSE_ROWS].t())
    return out


def _is_channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def to_hwcb(x: Tensor, pads: Tuple[int, int, int, int] = (0, 0, 0, 0)) -> Tensor:
    """A zero-padded (H + top + bottom, W + left + right, C, B) copy of a (B, C, H, W) tensor.

    Batch-last is a transpose of the batch against everything else: one 2-D transpose for a
    channels_last input, a 2-D transpose plus a block copy for a contiguous one (torch's
    generic 4-D permute copy is slower).
    """
    b, c, h, w = x.shape
    left, right, top, bottom = pads
    out = x.new_empty(h + top + bottom, w + left + right, c, b)
    for border in (out[:top], out[top + h:], out[top:top + h, :left], out[top:top + h, left + w:]):
        border.zero_()
    if _is_channels_last(x):
        inner = _transpose_2d(x.permute(0, 2, 3, 1).reshape(b, -1)).view(h, w, c, b)
    else:
        inner = _transpose_2d(x.reshape(b, -1)).view(c, h, w, b).permute(1, 2, 0, 3)
    out[top:top + h, left:left + w].copy_(inner)
    return out


def hwcb_rows(y: Tensor, channels_last: bool) -> Tensor:
    """The (rows, B) matrix whose transpose is the (B, C, H, W) form of an (H, W, C, B) tensor.

    Pixel-major rows for a channels_last result (a view of a contiguous ``y``), channel-major rows
    otherwise (a copy); rows_to_nchw finishes the conversion, so a caller can free ``y`` in between.
    """
    return (y if channels_last else y.permute(2, 0, 1, 3)).reshape(-1, y.shape[-1])


def rows_to_nchw(rows: Tensor, size: Tuple[int, int, int], channels_last: bool) -> Tensor:
    """The (B, C, H, W) tensor, channels_last or contiguous, of hwcb_rows' matrix; ``size`` is (H, W, C)."""
    h, w, c = size
    out = _transpose_2d(rows)
    return out.view(-1, h, w, c).permute(0, 3, 1, 2) if channels_last else out.view(-1, c, h, w)


def gather_patches(
        x_hwcb: Tensor,
        kernel_size: Tuple[int, int],
        stride: Tuple[int, int],
        dilation: Tuple[int, int],
        output_size: Tuple[int, int],
        groups: int,
        first_row: int = 0,
        out: Optional[Tensor] = None,
) -> Tensor:
    """Patches of output rows ``first_row .. first_row + output_size[0]`` of a padded (H, W, C, B) input.

    Returned as (rows * W_out * groups, kh * kw * C/groups, B), written into ``out`` when given.
    """
    hp, wp, c, b = x_hwcb.shape
    kh, kw = kernel_size
    ho, wo = output_size
    cg = c // groups
    row, col = wp * c * b, c * b
    windows = x_hwcb.as_strided(
        (ho, wo, groups, kh, kw, cg, b),
        (stride[0] * row, stride[1] * col, cg * b, dilation[0] * row, dilation[1] * col, b, 1),
        x_hwcb.storage_offset() + first_row * stride[0] * row,
    )
    if out is None:
        return windows.reshape(ho * wo * groups, kh * kw * cg, b)
    out.view(ho, wo, groups, kh, kw, cg, b).copy_(windows)
    return out


def scatter_patches_(
        grad_x_hwcb: Tensor,
        grad_cols: Tensor,
        kernel_size: Tuple[int, int],
        stride: Tuple[int, int],
        dilation: Tuple[int, int],
        output_size: Tuple[int, int],
        groups: int,
        first_row: int = 0,
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
        h0 = first_row * stride[0] + u * dilation[0]
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
    """The LC op on a padded (H, W, C, B) input in one batched matmul (the TorchScript path)."""
    ho, wo, c_out = weight.shape[:3]
    cols = gather_patches(x_hwcb, kernel_size, stride, dilation, (ho, wo), groups)
    w = weight_matrices(weight, groups)
    out = torch.bmm(w, cols) if bias is None else torch.baddbmm(_bias_columns(bias, groups), w, cols)
    return out.view(ho, wo, c_out, -1).permute(3, 2, 0, 1)


def _row_chunks(weight: Tensor, batch: int, groups: int):
    """(first row, rows) chunks of the output whose patches fill about CHUNK_BYTES."""
    ho, wo, _, kh, kw, cg = weight.shape
    row_bytes = wo * groups * kh * kw * cg * batch * weight.element_size()
    rows = max(1, min(ho, CHUNK_BYTES // row_bytes))
    return [(h, min(rows, ho - h)) for h in range(0, ho, rows)]


def _forward_gather(x_hwcb: Tensor, weight: Tensor, bias: Optional[Tensor], kernel_size: Tuple[int, int],
                    stride: Tuple[int, int], dilation: Tuple[int, int], groups: int) -> Tensor:
    """LC forward a chunk of output rows at a time; (H_out, W_out, C_out, B) result."""
    ho, wo, c_out = weight.shape[:3]
    b = x_hwcb.shape[-1]
    w = weight_matrices(weight, groups)
    bias_cols = None if bias is None else _bias_columns(bias, groups)
    out = x_hwcb.new_empty(ho * wo * groups, c_out // groups, b)
    chunks = _row_chunks(weight, b, groups)
    buffer = x_hwcb.new_empty(chunks[0][1] * wo * groups, w.shape[-1], b)
    for h, rows in chunks:
        p0, p1 = h * wo * groups, (h + rows) * wo * groups
        cols = gather_patches(x_hwcb, kernel_size, stride, dilation, (rows, wo), groups, h, buffer[:p1 - p0])
        if bias_cols is None:
            torch.bmm(w[p0:p1], cols, out=out[p0:p1])
        else:
            torch.baddbmm(bias_cols[p0:p1], w[p0:p1], cols, out=out[p0:p1])
    return out.view(ho, wo, c_out, b)


def _backward_gather(x_hwcb: Optional[Tensor], x_shape: Tuple[int, ...], weight: Tensor, g: Tensor, need_x: bool,
                     need_w: bool, kernel_size: Tuple[int, int], stride: Tuple[int, int], dilation: Tuple[int, int],
                     groups: int) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """Input (padded (H, W, C, B) of ``x_shape``) and weight gradients a chunk at a time.

    ``g`` is (positions * groups, C_out/groups, B); the padded input ``x_hwcb`` is needed for the
    weight gradient only.
    """
    ho, wo = weight.shape[:2]
    b = x_shape[-1]
    w = weight_matrices(weight, groups)
    grad_w = w.new_empty(w.shape) if need_w else None
    grad_x = g.new_zeros(x_shape) if need_x else None
    chunks = _row_chunks(weight, b, groups)
    buffer = g.new_empty(chunks[0][1] * wo * groups, w.shape[-1], b)
    for h, rows in chunks:
        p0, p1 = h * wo * groups, (h + rows) * wo * groups
        cols = buffer[:p1 - p0]
        if need_w:
            gather_patches(x_hwcb, kernel_size, stride, dilation, (rows, wo), groups, h, cols)
            torch.bmm(g[p0:p1], cols.transpose(1, 2), out=grad_w[p0:p1])
        if need_x:
            torch.bmm(w[p0:p1].transpose(1, 2), g[p0:p1], out=cols)
            scatter_patches_(grad_x, cols, kernel_size, stride, dilation, (rows, wo), groups, h)
    return grad_x, None if grad_w is None else grad_w.view(weight.shape)


def select_kernel(x: Tensor, groups: int) -> str:
    """The kernel (``gather`` or ``triton``) the LC op tries on ``x`` under the current selection.

    ``auto`` tries ``triton`` where ``kernels.auto_tries_triton`` says so, and runs it on a geometry
    only after its first-use check passed (else ``gather``; see ``first_use``). A kernel selected
    by name that cannot run on ``x`` is a ValueError saying why.

    Args:
        x: the op's input.
        groups: the op's groups.

    Returns:
        'gather' or 'triton'.

    Raises:
        ValueError: if 'triton' is selected by name and cannot run on ``x``.
    """
    return _candidate(get_lc_kernel(), x)


def _candidate(requested: str, x: Tensor) -> str:
    if requested == "auto":
        return "triton" if kernels.auto_tries_triton(x) else "gather"
    if requested == "triton":
        reason = triton_unusable(x)
        if reason is not None:
            raise ValueError(f"LC kernel 'triton' cannot run here: {reason}; select 'gather' or 'auto'")
    return requested


def _forward(kernel: str, x: Tensor, weight: Tensor, bias: Optional[Tensor], pads: Tuple[int, int, int, int],
             stride: Tuple[int, int], dilation: Tuple[int, int], groups: int) -> Tensor:
    """The LC op on a (B, C, H, W) input with ``kernel``; the output keeps the input's memory format."""
    x_hwcb = to_hwcb(x, pads)
    if kernel == "triton":
        out = triton_kernels().lc_forward(x_hwcb, weight, bias, stride, dilation, groups)
    else:
        out = _forward_gather(x_hwcb, weight, bias, (weight.shape[3], weight.shape[4]), stride, dilation, groups)
    del x_hwcb
    channels_last = _is_channels_last(x)
    rows = hwcb_rows(out, channels_last)
    del out  # before the transpose allocates the result (when hwcb_rows copied)
    return rows_to_nchw(rows, tuple(weight.shape[:3]), channels_last)


def _backward(kernel: str, grad_out: Tensor, x: Tensor, weight: Tensor, pads: Tuple[int, int, int, int],
              stride: Tuple[int, int], dilation: Tuple[int, int], groups: int, need_x: bool,
              need_w: bool) -> List[Tensor]:
    """[input gradient (if ``need_x``), weight gradient (if ``need_w``)] of the LC op with ``kernel``.

    The padded input is gathered again from ``x`` (only for the weight gradient): the forward
    keeps no copy of it.
    """
    ho, wo, c_out, kh, kw = weight.shape[:5]
    left, right, top, bottom = pads
    b, c, h, w = x.shape
    x_shape = (h + top + bottom, w + left + right, c, b)
    g = to_hwcb(grad_out).view(ho * wo * groups, c_out // groups, -1)
    x_hwcb = to_hwcb(x, pads) if need_w else None
    if kernel == "triton":
        module, g = triton_kernels(), g.view(ho * wo, c_out, -1)
        grad_w = module.lc_weight_grad(g, x_hwcb, weight, stride, dilation, groups) if need_w else None
        del x_hwcb
        grad_x_hwcb = module.lc_input_grad(g, weight, x_shape, stride, dilation, groups) if need_x else None
    else:
        grad_x_hwcb, grad_w = _backward_gather(x_hwcb, x_shape, weight, g, need_x, need_w, (kh, kw), stride,
                                               dilation, groups)
        del x_hwcb
    del g  # before the input gradient's layout copy: one activation-sized buffer less at the peak
    grads = []
    if need_x:
        channels_last = _is_channels_last(x)
        rows = hwcb_rows(grad_x_hwcb[top:top + h, left:left + w], channels_last)  # a copy
        del grad_x_hwcb  # before the transpose allocates the result: one input-sized buffer less at the peak
        grads.append(rows_to_nchw(rows, (h, w, c), channels_last))
    if need_w:
        grads.append(grad_w)
    return grads


def _geometry(x: Tensor, weight: Tensor, pads: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
              groups: int) -> Tuple[Tuple, str]:
    """The first-use check's key for a call and its one-line description."""
    _, c, h, w = x.shape
    ho, wo, c_out, kh, kw = weight.shape[:5]
    key = (str(x.device), x.dtype, (c, h, w), tuple(weight.shape), tuple(pads), tuple(stride), tuple(dilation),
           groups)
    description = (f"LC layer {c}->{c_out} channels, kernel {kh}x{kw}, input {h}x{w}, output {ho}x{wo}, "
                   f"stride {tuple(stride)}, dilation {tuple(dilation)}, padding {tuple(pads)}, groups {groups} "
                   f"({x.device}, {x.dtype})")
    return key, description


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = f"{type(err).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 300 else text[:297] + "..."


def _check_triton(x: Tensor, weight: Tensor, bias: Optional[Tensor], pads: Tuple[int, int, int, int],
                  stride: Tuple[int, int], dilation: Tuple[int, int], groups: int) -> Tuple[Optional[str], Optional[Tensor]]:
    """The first-use check: (the error, None when triton matched gather; triton's forward on ``x`` or None).

    Triton runs on the whole batch (so its autotuned configurations are this batch size's), with
    an upstream gradient that is random on the first ``CHECK_IMAGES`` images and zero on the rest;
    ``gather`` runs on those first images alone. Forward and input gradient are compared on those
    images, the input gradient of the others must be zero, and the weight gradient (a sum over
    the batch) is compared whole. The bias gradient is the same reduction in both kernels.
    """
    n = min(x.shape[0], first_use.CHECK_IMAGES)
    try:
        out = _forward("triton", x, weight, bias, pads, stride, dilation, groups)
        noise = torch.randn(out[:n].shape, generator=torch.Generator(x.device).manual_seed(0), device=x.device)
        grad_out = torch.zeros_like(out)
        grad_out[:n] = noise.to(out.dtype)
        grad_x, grad_w = _backward("triton", grad_out, x, weight, pads, stride, dilation, groups, True, True)
    except Exception as err:  # noqa: BLE001 - a compile or launch error is the check's verdict
        return _one_line(err), None
    ref_out = _forward("gather", x[:n], weight, bias, pads, stride, dilation, groups)
    ref_x, ref_w = _backward("gather", grad_out[:n], x[:n], weight, pads, stride, dilation, groups, True, True)
    error = first_use.mismatch([("forward", out[:n], ref_out), ("input gradient", grad_x[:n], ref_x),
                                ("input gradient beyond the checked images", grad_x[n:], torch.zeros_like(grad_x[n:])),
                                ("weight gradient", grad_w, ref_w)], x.dtype)
    return error, out


def _resolve(requested: str, x: Tensor, weight: Tensor, bias: Optional[Tensor], pads: Tuple[int, int, int, int],
             stride: Tuple[int, int], dilation: Tuple[int, int], groups: int) -> Tuple[str, Optional[Tensor]]:
    """The kernel a call runs, and its forward output when the first-use check just computed it."""
    kernel = _candidate(requested, x)
    if requested != "auto" or kernel != "triton":
        return kernel, None
    key, description = _geometry(x, weight, pads, stride, dilation, groups)
    verdict = first_use.decision(key)
    if verdict is not None:
        return verdict["kernel"], None
    started = time.perf_counter()
    error, out = _check_triton(x, weight, bias, pads, stride, dilation, groups)
    verdict = first_use.record(key, description, error, started)
    return verdict["kernel"], None if error else out


@torch.library.custom_op("timm_lc::locally_connected2d", mutates_args=())
def _lc_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], pads: List[int], stride: List[int],
           dilation: List[int], groups: int, kernel: str) -> Tensor:
    """The LC op on a (B, C, H, W) input zero-padded by ``pads``; ``kernel`` is the selection's name."""
    pads, stride, dilation = tuple(pads), tuple(stride), tuple(dilation)
    resolved, out = _resolve(kernel, x, weight, bias, pads, stride, dilation, groups)
    return out if out is not None else _forward(resolved, x, weight, bias, pads, stride, dilation, groups)


@_lc_op.register_fake
def _lc_op_fake(x, weight, bias, pads, stride, dilation, groups, kernel):
    ho, wo, c_out = weight.shape[:3]
    layout = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    return torch.empty((x.shape[0], c_out, ho, wo), dtype=x.dtype, device=x.device, memory_format=layout)


@torch.library.custom_op("timm_lc::locally_connected2d_backward", mutates_args=())
def _lc_backward_op(grad_out: Tensor, x: Tensor, weight: Tensor, pads: List[int], stride: List[int],
                    dilation: List[int], groups: int, kernel: str, need_x: bool, need_w: bool) -> List[Tensor]:
    """[input gradient (if ``need_x``), weight gradient (if ``need_w``)] of ``timm_lc::locally_connected2d``."""
    pads, stride, dilation = tuple(pads), tuple(stride), tuple(dilation)
    resolved, _ = _resolve(kernel, x, weight, None, pads, stride, dilation, groups)
    return _backward(resolved, grad_out, x, weight, pads, stride, dilation, groups, need_x, need_w)


@_lc_backward_op.register_fake
def _lc_backward_op_fake(grad_out, x, weight, pads, stride, dilation, groups, kernel, need_x, need_w):
    layout = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    return ([torch.empty_like(x, memory_format=layout)] if need_x else []) + \
        ([weight.new_empty(weight.shape)] if need_w else [])


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, pads, stride, dilation, groups, kernel = inputs
    ctx.save_for_backward(x, weight)
    ctx.conf = (pads, stride, dilation, groups, kernel)


def _lc_op_backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    pads, stride, dilation, groups, kernel = ctx.conf
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    grads = iter(_lc_backward_op(grad_out, x, weight, pads, stride, dilation, groups, kernel, need_x, need_w)
                 if need_x or need_w else [])
    grad_x = next(grads) if need_x else None
    grad_w = next(grads) if need_w else None
    grad_b = grad_out.sum(0).contiguous() if need_b else None
    return grad_x, grad_w, grad_b, None, None, None, None, None


def _setup_backward_context(ctx, inputs, output) -> None:
    grad_out, x, weight, pads, stride, dilation, groups, kernel, need_x, need_w = inputs
    ctx.save_for_backward(grad_out, x, weight)
    ctx.conf = (pads, stride, dilation, groups, kernel, need_x, need_w)


def _lc_backward_op_backward(ctx, grad_grads):
    """Double backward: the gradients are bilinear, so their derivatives are LC ops again.

    With ``gx = B_x(g, W)`` and ``gW = B_W(g, x)`` (the adjoints of the forward) and incoming
    ``ggx``, ``ggW``: d/dg = LC(ggx, W) + LC(x, ggW), d/dW = B_W(g, ggx), d/dx = B_x(g, ggW).
    """
    grad_out, x, weight = ctx.saved_tensors
    pads, stride, dilation, groups, kernel, need_x, need_w = ctx.conf
    incoming = iter(grad_grads)
    ggx = next(incoming) if need_x else None
    ggw = next(incoming) if need_w else None
    need_g, need_in, need_weight = ctx.needs_input_grad[:3]
    d_g = d_x = d_w = None
    if need_g and ggx is not None:
        d_g = _lc_op(ggx, weight, None, pads, stride, dilation, groups, kernel)
    if need_g and ggw is not None:
        through_w = _lc_op(x, ggw, None, pads, stride, dilation, groups, kernel)
        d_g = through_w if d_g is None else d_g + through_w
    if need_in and ggw is not None:
        d_x, = _lc_backward_op(grad_out, x, ggw, pads, stride, dilation, groups, kernel, True, False)
    if need_weight and ggx is not None:
        d_w, = _lc_backward_op(grad_out, ggx, weight, pads, stride, dilation, groups, kernel, False, True)
    return d_g, d_x, d_w, None, None, None, None, None, None, None


_lc_op.register_autograd(_lc_op_backward, setup_context=_setup_context)
_lc_backward_op.register_autograd(_lc_backward_op_backward, setup_context=_setup_backward_context)


def locally_connected2d_plain(
        x: Tensor,
        weight: Tensor,
        bias: Optional[Tensor],
        kernel_size: Tuple[int, int],
        stride: Tuple[int, int],
        dilation: Tuple[int, int],
        groups: int,
) -> Tensor:
    """The op on an already padded input in plain autograd-tracked ops: the TorchScript path
    (keeps the patches for backward)."""
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

    Under autocast the inputs are cast once to the autocast dtype (before any patch exists)
    so the batched matmuls run in low precision. Backward recomputes the patches from the
    input, saved by reference, instead of keeping them: the op keeps no activation of its own.
    Double backward (``create_graph=True``, gradient penalties) works to any order: the
    gradients are LC ops again. ``torch.compile(fullgraph=True)`` traces the op in one graph
    (a custom operator); the kernel is chosen when the op runs (``set_lc_kernel``), and under
    ``auto`` the Triton kernels run on a geometry only after matching ``gather`` on its first
    call (else one warning, then ``gather``).

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

    Raises:
        ValueError: if ``x`` is not 4-D or ``weight`` not 6-D, if ``padding`` is malformed, or if
            ``weight``'s shape does not match the input, kernel, stride, padding, dilation and groups.
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
    device_type = x.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
        with torch.autocast(device_type, enabled=False):
            return _lc_op(x, weight, bias, pads, stride, dilation, groups, get_lc_kernel())
    return _lc_op(x, weight, bias, pads, stride, dilation, groups, get_lc_kernel())
