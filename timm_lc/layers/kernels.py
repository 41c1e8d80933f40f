"""Which implementation runs the LC op: ``set_lc_kernel`` / ``get_lc_kernel`` and ``TIMM_LC_KERNEL``.

* ``gather``: patches gathered a chunk of output rows at a time, one large batched matmul per
  chunk (any groups, any device),
* ``triton``: implicit-GEMM Triton kernels reading the input directly (CUDA, or CPU tensors
  under ``TRITON_INTERPRET=1``; fp16 / bf16 / fp32; any groups),
* ``auto`` (the default): ``triton`` on CUDA when triton imports and the dtype is supported,
  once the kernels passed their first-use check on the geometry (see ``first_use``), else ``gather``.

A kernel asked for by name never silently falls back: ``triton`` where it cannot run is a
ValueError naming the reason (a silent fallback would make a
benchmark or a debugging session measure something other than what was asked for).
The environment variable ``TIMM_LC_KERNEL`` gives the choice until ``set_lc_kernel`` is called.
"""
import importlib
import os
from types import ModuleType
from typing import Optional

import torch

__all__ = ["KERNELS", "ENV_VAR", "auto_tries_triton", "get_lc_kernel", "set_lc_kernel", "triton_kernels",
           "triton_unusable"]

KERNELS = ("auto", "triton", "gather")
ENV_VAR = "TIMM_LC_KERNEL"

_selected: Optional[str] = None  # None: follow the environment variable
_triton: Optional[ModuleType] = None
_triton_error: Optional[str] = None


def _validate(name: str, source: str) -> str:
    if name not in KERNELS:
        raise ValueError(f"{source}: unknown LC kernel {name!r}; expected one of: {', '.join(KERNELS)}")
    return name


def get_lc_kernel() -> str:
    """The selected LC kernel name: the last ``set_lc_kernel``, else ``TIMM_LC_KERNEL``, else ``auto``.

    Returns:
        One of 'auto', 'triton', 'gather'.

    Raises:
        ValueError: if no kernel was set and ``TIMM_LC_KERNEL`` names an unknown kernel.
    """
    if _selected is not None:
        return _selected
    return _validate(os.environ.get(ENV_VAR, "auto"), f"environment variable {ENV_VAR}")


def set_lc_kernel(name: str) -> None:
    """Selects the LC kernel for all later calls in this process (a forward's backward keeps its own).

    Args:
        name: 'auto', 'triton' or 'gather'; overrides ``TIMM_LC_KERNEL``.

    Raises:
        ValueError: if ``name`` is not a known kernel.
    """
    global _selected
    _selected = _validate(name, "set_lc_kernel")


def triton_kernels() -> Optional[ModuleType]:
    """The ``triton_lc`` kernel module, imported on first use (an import failure is remembered, not retried).

    Returns:
        The module, or None when triton does not import.
    """
    global _triton, _triton_error
    if _triton is None and _triton_error is None:
        try:
            _triton = importlib.import_module(f"{__package__}.triton_lc")
        except ImportError as err:
            _triton_error = f"triton does not import ({err})"
    return _triton


def triton_unusable(x: torch.Tensor) -> Optional[str]:
    """Why the triton kernel cannot run on ``x``.

    Args:
        x: the LC op's input.

    Returns:
        The reason in one sentence (triton missing, dtype, size, device), or None when it can run.
    """
    module = triton_kernels()
    if module is None:
        return _triton_error
    if x.dtype not in module.DTYPES:
        return f"dtype {x.dtype} is not supported (supported: {', '.join(str(d) for d in module.DTYPES)})"
    if x.numel() >= 2 ** 31:
        return f"inputs of 2**31 elements or more are not supported (offsets within one are int32), got {x.numel()}"
    if x.device.type == "cuda" or (module.INTERPRETED and x.device.type == "cpu"):
        return None
    if x.device.type == "cpu":
        return ("CPU tensors need Triton's interpreter: start the process with TRITON_INTERPRET=1 in its "
                "environment (it must be set before triton is first imported)")
    return f"device {x.device.type!r} is not supported (CUDA, or the CPU under TRITON_INTERPRET=1)"


def auto_tries_triton(x: torch.Tensor) -> bool:
    """Whether ``auto`` tries the Triton kernels on ``x``: CUDA tensors, compiled kernels, a supported dtype.

    ``auto`` never picks Triton's (slow) interpreter. This predicate is the one seam for tests:
    replaced by one that accepts CPU tensors (in a ``TRITON_INTERPRET=1`` process), ``auto`` and
    its first-use check run on the CPU.

    Args:
        x: the LC op's input.

    Returns:
        True when ``x`` is a CUDA tensor the compiled (not interpreted) Triton kernels can run on.
    """
    return x.device.type == "cuda" and triton_unusable(x) is None and not triton_kernels().INTERPRETED
