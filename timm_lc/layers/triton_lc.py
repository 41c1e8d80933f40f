"""Implicit-GEMM Triton kernels for the locally connected op (the ``triton`` LC kernel).

The gather path materialises the k^2-inflated patches before each batched matmul; these kernels
read the padded (H, W, C, B) input directly instead (implicit GEMM). Every program owns one
output tile of one position (and group) and walks its K dimension, the patch rows ``(u, v, c)``
(kernel offsets, then channels), in blocks: each row's input offset is computed from ``(u, v, c)``
and its (batch) row is loaded straight from the input, so no patch tensor exists in the forward
or in either gradient:

* forward: ``out[p, m, b] = sum_(u, v, c) W[p, m, u, v, c] x[h s + u d, w s + v d, c, b]``,
* input gradient: for every padded input pixel, the sum over the positions and kernel offsets
  that read it of ``W[p, :, u, v, :]^T g[p]`` (a gather formulation: each input gradient element
  is written once, with no atomics, so it is deterministic; with stride s only about 1 / s^2 of
  the kernel offsets reach a pixel, and the others are masked: no loads, but the dot runs),
* weight gradient: ``dW[p, :, u, v, :] = g[p] x[pixel(p, u, v)]^T``, reduced over the batch.

fp16 / bf16 / fp32 inputs, fp32 accumulation; fp32 dots use TF32 unless
``torch.get_float32_matmul_precision()`` is ``"highest"`` (torch's own default, so fp32 results
match ``torch.bmm``). Any stride, dilation and groups; padding is applied by the caller.

With ``TRITON_INTERPRET=1`` in the environment of the process (it has to be there before
``triton`` is first imported, which ``import timm_lc`` does through torch: ``triton.jit`` reads it
when it decorates a function, triton's own ``tl`` functions at ``import triton``) the kernels run
on CPU tensors in Triton's interpreter: exact and slow, with a single autotuning configuration,
so nothing is benchmarked.
"""
import os
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["DTYPES", "INTERPRETED", "lc_forward", "lc_input_grad", "lc_weight_grad"]

DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _interpreting() -> bool:
    knobs = getattr(triton, "knobs", None)  # triton < 3.4 has no knobs and reads the variable itself
    return bool(knobs.runtime.interpret) if knobs is not None else os.environ.get("TRITON_INTERPRET") == "1"


INTERPRETED = _interpreting()  # the mode triton.jit gives the kernels below (fixed once decorated)


def _configs(tiles: List[Tuple[int, int, int, int, int]], interpreted: Tuple[int, int, int]) -> List[triton.Config]:
    """Autotuning configurations from (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) tiles.

    Interpreted, a single large tile: nothing is benchmarked and few programs run.
    """
    if INTERPRETED:
        tiles = [(*interpreted, 1, 1)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
            for m, n, k, w, s in tiles]


# (M, N, K) of the GEMMs: forward (C_out/g, batch, kh kw C/g), input gradient (C/g, batch, kh kw C_out/g),
# weight gradient (C_out/g, kh kw C/g, batch); a large, a medium and a narrow-M tile each
_GEMM_TILES = [(128, 128, 32, 8, 3), (64, 128, 32, 4, 4), (32, 64, 64, 4, 3)]
_WGRAD_TILES = [(128, 128, 64, 8, 3), (64, 128, 64, 4, 3), (32, 64, 128, 4, 3)]
_KEY = ["P", "C_OUT_G", "CG", "BATCH", "KH", "KW"]
# sizes that need no compile-time value specialisation (channel and batch sizes keep theirs: their
# divisibility lets loads along the batch vectorise)
_GENERIC = ["P", "WO", "WP", "GROUPS", "STRIDE_H", "STRIDE_W", "DIL_H", "DIL_W"]


@triton.jit
def _dot(a, b, acc, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b; UPCAST (interpreted bf16 only): Triton's interpreter multiplies bf16 dot operands
    as their raw uint16 storage (triton 3.8), so they go to fp32 first (exact)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=INPUT_PRECISION)


@triton.jit
def _window_offsets(k, CG, KW: tl.constexpr, WP, C, BATCH, DIL_H, DIL_W):
    """Offsets of the patch rows ``k = (u, v, c)`` from a window's top-left corner in (H, W, C, B) memory."""
    uv = k // CG
    u = uv // KW
    return ((u * DIL_H * WP + (uv - u * KW) * DIL_W) * C + (k - uv * CG)) * BATCH


@triton.autotune(configs=_configs(_GEMM_TILES, (16, 16, 128)), key=_KEY)
@triton.jit(do_not_specialize=_GENERIC)
def _lc_forward_kernel(
        x_ptr, w_ptr, bias_ptr, out_ptr,
        P, WO, WP, C, BATCH, C_OUT, CG, C_OUT_G, GROUPS,
        STRIDE_H, STRIDE_W, DIL_H, DIL_W,
        KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr,
        INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out (P, C_out, B): tile [out channels, batch] of one position and group, K = (u, v, c)."""
    pid = tl.program_id(0)
    p = pid // GROUPS
    g = pid % GROUPS
    K = KH * KW * CG
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m[:, None] < C_OUT_G
    mask_n = offs_n[None, :] < BATCH
    chan_out = g * C_OUT_G + offs_m
    corner = ((p // WO) * STRIDE_H).to(tl.int64) * WP + (p % WO) * STRIDE_W
    x_cols = x_ptr + (corner * C + g * CG) * BATCH + offs_n[None, :]
    w_rows = w_ptr + p.to(tl.int64) * C_OUT * K + chan_out[:, None] * K
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        mask_k = k < K
        a = tl.load(w_rows + k[None, :], mask=mask_m & mask_k[None, :], other=0.0)
        offsets = _window_offsets(k, CG, KW, WP, C, BATCH, DIL_H, DIL_W)
        b = tl.load(x_cols + offsets[:, None], mask=mask_k[:, None] & mask_n, other=0.0)
        acc = _dot(a, b, acc, INPUT_PRECISION, UPCAST)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + chan_out.to(tl.int64) * P + p, mask=offs_m < C_OUT_G, other=0.0)
        acc += bias.to(tl.float32)[:, None]
    out = out_ptr + p.to(tl.int64) * C_OUT * BATCH + chan_out[:, None] * BATCH + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_m & mask_n)


@triton.autotune(configs=_configs(_GEMM_TILES, (16, 16, 128)), key=_KEY)
@triton.jit(do_not_specialize=_GENERIC + ["HO"])
def _lc_input_grad_kernel(
        g_ptr, w_ptr, gx_ptr,
        P, HO, WO, WP, C, BATCH, C_OUT, CG, C_OUT_G, GROUPS,
        STRIDE_H, STRIDE_W, DIL_H, DIL_W,
        KH: tl.constexpr, KW: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """grad_x (Hp, Wp, C, B): tile [in channels, batch] of one padded pixel and group, K = (u, v, c_out).

    Row (u, v, m) of K is output channel m of the position that reads this pixel through kernel
    offset (u, v); offsets through which no position reads the pixel are masked out.
    """
    pid = tl.program_id(0)
    q = pid // GROUPS
    g = pid % GROUPS
    hp = q // WP
    wp = q % WP
    K = KH * KW * C_OUT_G
    K_W = KH * KW * CG  # one output channel's filter
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m[:, None] < CG
    mask_n = offs_n[None, :] < BATCH
    w_cols = w_ptr + g * C_OUT_G * K_W + offs_m[:, None]
    g_rows = g_ptr + g * C_OUT_G * BATCH + offs_n[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        uv = k // C_OUT_G
        m = k - uv * C_OUT_G
        u = uv // KW
        th = hp - u * DIL_H
        tw = wp - (uv - u * KW) * DIL_W
        oh = th // STRIDE_H
        ow = tw // STRIDE_W
        valid = (k < K) & (th >= 0) & (tw >= 0) & (oh * STRIDE_H == th) & (ow * STRIDE_W == tw) \
            & (oh < HO) & (ow < WO)
        p = (oh * WO + ow).to(tl.int64)
        a = tl.load(w_cols + (p * C_OUT * K_W + m * K_W + uv * CG)[None, :], mask=mask_m & valid[None, :],
                    other=0.0)
        b = tl.load(g_rows + (p * C_OUT * BATCH + m * BATCH)[:, None], mask=valid[:, None] & mask_n, other=0.0)
        acc = _dot(a, b, acc, INPUT_PRECISION, UPCAST)
    gx = gx_ptr + (q.to(tl.int64) * C + g * CG + offs_m[:, None]) * BATCH + offs_n[None, :]
    tl.store(gx, acc.to(gx_ptr.dtype.element_ty), mask=mask_m & mask_n)


@triton.autotune(configs=_configs(_WGRAD_TILES, (16, 128, 16)), key=_KEY)
@triton.jit(do_not_specialize=_GENERIC)
def _lc_weight_grad_kernel(
        x_ptr, g_ptr, gw_ptr,
        P, WO, WP, C, BATCH, C_OUT, CG, C_OUT_G, GROUPS,
        STRIDE_H, STRIDE_W, DIL_H, DIL_W,
        KH: tl.constexpr, KW: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """grad_w (P, C_out, kh kw C/groups): tile [out channels, (u, v, c)] of one position and group, K = batch."""
    pid = tl.program_id(0)
    p = pid // GROUPS
    g = pid % GROUPS
    K_W = KH * KW * CG
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m[:, None] < C_OUT_G
    mask_n = offs_n[None, :] < K_W
    chan_out = g * C_OUT_G + offs_m
    corner = ((p // WO) * STRIDE_H).to(tl.int64) * WP + (p % WO) * STRIDE_W
    offsets = _window_offsets(offs_n, CG, KW, WP, C, BATCH, DIL_H, DIL_W)
    x_rows = x_ptr + (corner * C + g * CG) * BATCH + offsets[None, :]
    g_rows = g_ptr + p.to(tl.int64) * C_OUT * BATCH + chan_out[:, None] * BATCH
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, BATCH, BLOCK_K):
        k = k0 + offs_k
        mask_k = k < BATCH
        a = tl.load(g_rows + k[None, :], mask=mask_m & mask_k[None, :], other=0.0)
        b = tl.load(x_rows + k[:, None], mask=mask_k[:, None] & mask_n, other=0.0)
        acc = _dot(a, b, acc, INPUT_PRECISION, UPCAST)
    gw = gw_ptr + p.to(tl.int64) * C_OUT * K_W + chan_out[:, None] * K_W + offs_n[None, :]
    tl.store(gw, acc.to(gw_ptr.dtype.element_ty), mask=mask_m & mask_n)


def _dot_options(dtype: torch.dtype) -> dict:
    """TF32 dots for fp32 unless torch asks for full precision (its default); fp16/bf16 ignore it."""
    ieee = dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest"
    return dict(INPUT_PRECISION="ieee" if ieee else "tf32", UPCAST=INTERPRETED and dtype == torch.bfloat16)


def _check(*tensors: Tensor) -> None:
    """One supported dtype, contiguous operands, and offsets within a window that fit in int32."""
    dtype = tensors[0].dtype
    if dtype not in DTYPES or any(t.dtype != dtype for t in tensors):
        raise TypeError(f"triton LC kernels need one dtype out of {DTYPES} for all operands, "
                        f"got {[t.dtype for t in tensors]}")
    if not all(t.is_contiguous() for t in tensors):
        raise ValueError("triton LC kernels need contiguous operands")
    if tensors[0].numel() >= 2 ** 31:
        raise ValueError(f"triton LC kernels index an operand within 2**31 elements, got {tensors[0].numel()}")


def _sizes(x_shape: Tuple[int, ...], weight: Tensor, groups: int) -> dict:
    hp, wp, c, batch = x_shape
    ho, wo, c_out, kh, kw, cg = weight.shape
    return dict(P=ho * wo, WO=wo, WP=wp, C=c, BATCH=batch, C_OUT=c_out, CG=cg, C_OUT_G=c_out // groups,
                GROUPS=groups, KH=kh, KW=kw)


def lc_forward(x_hwcb: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Tuple[int, int],
               dilation: Tuple[int, int], groups: int) -> Tensor:
    """LC forward of a padded, contiguous (H, W, C, B) input.

    Args:
        x_hwcb: the padded input, (H, W, C, B), contiguous.
        weight: the filters, (H_out, W_out, C_out, kh, kw, C/groups).
        bias: (C_out, H_out, W_out), or None.
        stride: (stride_h, stride_w).
        dilation: (dilation_h, dilation_w).
        groups: the number of channel groups.

    Returns:
        The output, (H_out, W_out, C_out, B), in the input's dtype.

    Raises:
        TypeError: if the operands do not share one supported dtype.
        ValueError: if ``x_hwcb`` is not contiguous or has 2**31 elements or more.
    """
    weight = weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    _check(x_hwcb, weight, *(() if bias is None else (bias,)))
    ho, wo, c_out = weight.shape[:3]
    out = x_hwcb.new_empty(ho, wo, c_out, x_hwcb.shape[-1])
    sizes = _sizes(x_hwcb.shape, weight, groups)
    grid = lambda meta: (sizes["P"] * groups, triton.cdiv(sizes["C_OUT_G"], meta["BLOCK_M"]),  # noqa: E731
                         triton.cdiv(sizes["BATCH"], meta["BLOCK_N"]))
    _lc_forward_kernel[grid](
        x_hwcb, weight, weight if bias is None else bias, out, **sizes,
        STRIDE_H=stride[0], STRIDE_W=stride[1], DIL_H=dilation[0], DIL_W=dilation[1],
        HAS_BIAS=bias is not None, **_dot_options(x_hwcb.dtype))
    return out


def lc_input_grad(grad_out: Tensor, weight: Tensor, input_shape: Tuple[int, ...], stride: Tuple[int, int],
                  dilation: Tuple[int, int], groups: int) -> Tensor:
    """Gradient of the padded (H, W, C, B) input of ``input_shape`` from a contiguous (P, C_out, B) ``grad_out``.

    Args:
        grad_out: the output gradient, (H_out * W_out, C_out, B), contiguous.
        weight: the filters, (H_out, W_out, C_out, kh, kw, C/groups).
        input_shape: the padded input's shape, (H, W, C, B).
        stride: (stride_h, stride_w).
        dilation: (dilation_h, dilation_w).
        groups: the number of channel groups.

    Returns:
        The padded input's gradient, of ``input_shape``, in ``grad_out``'s dtype.

    Raises:
        TypeError: if the operands do not share one supported dtype.
        ValueError: if ``grad_out`` is not contiguous or has 2**31 elements or more.
    """
    weight = weight.contiguous()
    _check(grad_out, weight)
    ho, wo = weight.shape[:2]
    grad_x = grad_out.new_empty(input_shape)
    sizes = _sizes(tuple(input_shape), weight, groups)
    grid = lambda meta: (input_shape[0] * input_shape[1] * groups,  # noqa: E731
                         triton.cdiv(sizes["CG"], meta["BLOCK_M"]), triton.cdiv(sizes["BATCH"], meta["BLOCK_N"]))
    _lc_input_grad_kernel[grid](
        grad_out, weight, grad_x, HO=ho, **sizes,
        STRIDE_H=stride[0], STRIDE_W=stride[1], DIL_H=dilation[0], DIL_W=dilation[1],
        **_dot_options(grad_out.dtype))
    return grad_x


def lc_weight_grad(grad_out: Tensor, x_hwcb: Tensor, weight: Tensor, stride: Tuple[int, int],
                   dilation: Tuple[int, int], groups: int) -> Tensor:
    """Gradient of ``weight`` from (P, C_out, B) ``grad_out`` and the padded input, reduced over the batch.

    Args:
        grad_out: the output gradient, (H_out * W_out, C_out, B), contiguous.
        x_hwcb: the padded input, (H, W, C, B), contiguous.
        weight: the filters, (H_out, W_out, C_out, kh, kw, C/groups), contiguous; only its shape and dtype are used.
        stride: (stride_h, stride_w).
        dilation: (dilation_h, dilation_w).
        groups: the number of channel groups.

    Returns:
        The weight gradient, of ``weight``'s shape, dtype and device.

    Raises:
        TypeError: if the operands do not share one supported dtype.
        ValueError: if an operand is not contiguous or ``x_hwcb`` has 2**31 elements or more.
    """
    _check(x_hwcb, grad_out, weight)
    grad_w = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
    sizes = _sizes(x_hwcb.shape, weight, groups)
    grid = lambda meta: (sizes["P"] * groups, triton.cdiv(sizes["C_OUT_G"], meta["BLOCK_M"]),  # noqa: E731
                         triton.cdiv(sizes["KH"] * sizes["KW"] * sizes["CG"], meta["BLOCK_N"]))
    _lc_weight_grad_kernel[grid](
        x_hwcb, grad_out, grad_w, **sizes,
        STRIDE_H=stride[0], STRIDE_W=stride[1], DIL_H=dilation[0], DIL_W=dilation[1],
        **_dot_options(x_hwcb.dtype))
    return grad_w
