"""The CUDA checks of ``LocallyConnected2d``, shipped with the package so ``timm-lc doctor`` runs them
from an installed wheel; the test suite runs the same functions (``pytest -k cuda``).

Each check raises ``AssertionError`` (through ``torch.testing.assert_close``) on a mismatch:
* ``check_matches_cpu``: forward and gradients on CUDA equal the CPU's, and bf16 autocast applies,
* ``check_triton_matches_gather``: the compiled Triton kernels equal the ``gather`` path in fp32,
* ``check_triton_low_precision``: the same in bf16 / fp16, over several tiles of every block size,
* ``check_auto_picks_triton``: ``auto`` selects Triton on CUDA for fp32 and low precision, not fp64.
"""
from contextlib import contextmanager
from typing import Callable, Iterator, List, Tuple

import torch

from ..layers import LocallyConnected2d, get_lc_kernel, select_kernel, set_lc_kernel

__all__ = ["CASES", "CASE_IDS", "check_matches_cpu", "check_triton_matches_gather", "check_triton_low_precision",
           "check_auto_picks_triton", "checks"]

# (in, out, kernel, stride, padding, dilation, groups, input_size, padding_mode)
CASES = [
    (3, 5, 3, 1, 1, 1, 1, (7, 9), "zeros"),
    (4, 6, 3, 2, 1, 1, 1, (8, 8), "zeros"),
    (4, 8, 3, 2, (1, 0), 1, 2, (9, 8), "reflect"),
    (6, 6, 3, 1, "same", 2, 6, (9, 7), "circular"),  # depthwise, dilated
    (3, 4, 2, 1, "same", 1, 1, (5, 6), "replicate"),  # even kernel: asymmetric 'same'
    (4, 4, 1, 2, 0, 1, 1, (7, 7), "zeros"),  # 1x1 stride-2 shortcut
    (3, 5, (3, 5), (1, 2), "valid", (2, 1), 1, (10, 11), "zeros"),  # non-square everything
    (2, 3, 7, 2, 3, 1, 1, (12, 10), "zeros"),  # stem-like
]
CASE_IDS = [f"case{i}" for i in range(len(CASES))]
LOW_PRECISIONS = (torch.bfloat16, torch.float16)


@contextmanager
def _compiled_setting() -> Iterator[None]:
    """fp32 dots in IEEE fp32 (as torch.bmm's); the LC kernel selection is restored afterwards."""
    precision, kernel = torch.get_float32_matmul_precision(), get_lc_kernel()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        set_lc_kernel(kernel)


def _lc(case: tuple, seed: int = 0) -> LocallyConnected2d:
    """An fp32 LC layer for ``case`` with its own random filter and bias at every position."""
    cin, cout, k, s, p, d, g, size, mode = case
    torch.manual_seed(seed)
    return LocallyConnected2d(cin, cout, k, size, s, p, d, g, padding_mode=mode)


def _step(lc: LocallyConnected2d, x: torch.Tensor, kernel: str) -> Tuple[torch.Tensor, ...]:
    """Output and input / weight / bias gradients of one squared-sum step with ``kernel``."""
    set_lc_kernel(kernel)
    x = x.detach().clone().requires_grad_()
    out = lc(x)
    out.square().sum().backward()
    result = out.detach(), x.grad, lc.weight.grad, lc.bias.grad
    lc.zero_grad(set_to_none=True)
    return result


def check_matches_cpu(case: tuple) -> None:
    """The layer on CUDA computes what it computes on the CPU (forward, input and weight gradients).

    Args:
        case: (in, out, kernel, stride, padding, dilation, groups, input_size, padding_mode).
    """
    cin, cout, k, s, p, d, g, size, mode = case
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, k, s, p, d, g, bias=True, padding_mode=mode)
    lc = LocallyConnected2d.from_conv(conv, size)
    x = torch.randn(2, cin, *size, requires_grad=True)
    out = lc(x)
    out.square().sum().backward()
    lc_cuda = LocallyConnected2d.from_conv(conv.cuda(), size)
    with torch.no_grad():
        lc_cuda.weight.copy_(lc.weight)
    xc = x.detach().cuda().requires_grad_()
    out_c = lc_cuda(xc)
    out_c.square().sum().backward()
    torch.testing.assert_close(out_c.cpu(), out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(xc.grad.cpu(), x.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lc_cuda.weight.grad.cpu(), lc.weight.grad, rtol=1e-3, atol=1e-3)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert lc_cuda(xc).dtype == torch.bfloat16, "bf16 autocast does not apply to the layer"


def check_triton_matches_gather(case: tuple) -> None:
    """The compiled Triton kernels give the ``gather`` path's output and gradients in fp32.

    Args:
        case: (in, out, kernel, stride, padding, dilation, groups, input_size, padding_mode).
    """
    with _compiled_setting():
        lc = _lc(case).cuda()
        x = torch.randn(5, case[0], *case[7], device="cuda")
        for a, b in zip(_step(lc, x, "triton"), _step(lc, x, "gather")):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def check_triton_low_precision(dtype: torch.dtype) -> None:
    """Triton in ``dtype`` against fp32 ``gather``, with channels, batch and positions over several
    tiles, none a multiple of a block size.

    Args:
        dtype: torch.bfloat16 or torch.float16.
    """
    with _compiled_setting():
        lc = _lc((80, 72, 3, 1, 1, 1, 1, (9, 10), "zeros")).cuda()
        x = torch.randn(133, 80, 9, 10, device="cuda")
        reference = _step(lc, x, "gather")
        lc.to(dtype)
        for a, b in zip(_step(lc, x.to(dtype), "triton"), reference):
            assert a.dtype == dtype, f"expected {dtype} results, got {a.dtype}"
            torch.testing.assert_close(a.float(), b, rtol=3e-2, atol=3e-2 * b.abs().max().item())


def check_auto_picks_triton() -> None:
    """``auto`` selects Triton for fp32 CUDA tensors (groups 1 and 4) and ``gather`` for fp64."""
    with _compiled_setting():
        set_lc_kernel("auto")
        x = torch.zeros(2, 4, 5, 5, device="cuda")
        assert select_kernel(x, 1) == "triton" and select_kernel(x, 4) == "triton", "auto did not pick triton"
        assert select_kernel(x.double(), 1) == "gather", "auto picked triton for fp64"
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert LocallyConnected2d(4, 4, 3, (5, 5), padding=1, device="cuda")(x).dtype == torch.bfloat16


def checks() -> List[Tuple[str, Callable[[], None]]]:
    """Every check with its arguments bound, named as pytest names the matching test.

    Returns:
        ``[(name, check)]``; each check needs a CUDA device and raises AssertionError on a mismatch.
    """
    out: List[Tuple[str, Callable[[], None]]] = []
    for case, case_id in zip(CASES, CASE_IDS):
        out.append((f"cuda_matches_cpu[{case_id}]", lambda c=case: check_matches_cpu(c)))
    for case, case_id in zip(CASES, CASE_IDS):
        out.append((f"cuda_triton_matches_gather[{case_id}]", lambda c=case: check_triton_matches_gather(c)))
    for dtype in LOW_PRECISIONS:
        out.append((f"cuda_triton_low_precision[{dtype}]", lambda t=dtype: check_triton_low_precision(t)))
    out.append(("cuda_auto_picks_triton", check_auto_picks_triton))
    return out
