"""The first-use check that ``auto`` runs before it trusts the Triton LC kernels on a geometry.

Under ``auto`` the first call of the LC op for a (device, dtype, geometry) runs the Triton
forward, input gradient and weight gradient on that batch and compares them with the ``gather``
kernel on its first ``CHECK_IMAGES`` images (see ``lc_function``). This module holds what was
decided: a geometry whose check failed (a compile or launch error, or a result beyond the dtype's
tolerance) is warned about once, in one line, and runs ``gather`` from then on; a geometry that
passed runs ``triton``. A kernel named explicitly (``set_lc_kernel("triton")``) is never checked.
"""
import time
import warnings
from typing import Dict, Hashable, Optional, Sequence, Tuple, TypedDict

import torch
from torch import Tensor

__all__ = ["CHECK_IMAGES", "Decision", "clear_first_use_checks", "decision", "first_use_checks", "mismatch",
           "record", "tolerance"]

CHECK_IMAGES = 2  # images of the batch the gather reference runs on
# largest max |triton - gather| / max |gather| accepted per dtype (fp32: IEEE dots under torch's
# "highest" matmul precision, TF32 dots otherwise)
_TOLERANCES = {torch.float16: 1e-2, torch.bfloat16: 3e-2}
_FP32_TOLERANCE = {"highest": 1e-4, "tf32": 5e-3}


class Decision(TypedDict):
    """One geometry's verdict: the kernel it runs, the check's error (None when it passed), the check's seconds."""
    kernel: str
    error: Optional[str]
    check_s: float


_decisions: Dict[Hashable, Decision] = {}
_descriptions: Dict[Hashable, str] = {}


def tolerance(dtype: torch.dtype) -> float:
    """The largest relative max error against ``gather`` that the check accepts in ``dtype``.

    Args:
        dtype: the dtype the kernels ran in (float32, float16 or bfloat16).

    Returns:
        The tolerance; for float32 it depends on ``torch.get_float32_matmul_precision()`` (IEEE or TF32 dots).
    """
    if dtype == torch.float32:
        return _FP32_TOLERANCE["highest" if torch.get_float32_matmul_precision() == "highest" else "tf32"]
    return _TOLERANCES[dtype]


def mismatch(pairs: Sequence[Tuple[str, Tensor, Tensor]], dtype: torch.dtype) -> Optional[str]:
    """The first (name, result, reference) pair beyond ``dtype``'s tolerance, described; None when all match.

    The error is max |result - reference| / max |reference| over the reference's finite entries;
    a result that is not finite exactly where the reference is not is a mismatch.

    Args:
        pairs: (name, result, reference) triples, the Triton result and its ``gather`` reference.
        dtype: the dtype the kernels ran in, which sets the tolerance.

    Returns:
        A one-line description of the first mismatching pair, or None when every pair matches.
    """
    limit = tolerance(dtype)
    for name, result, reference in pairs:
        finite = torch.isfinite(reference)
        if not torch.equal(finite, torch.isfinite(result)):
            return f"{name} is not finite where gather's is (or the reverse)"
        reference, result = reference[finite].float(), result[finite].float()
        if reference.numel() == 0:
            continue
        error = float((result - reference).abs().max()) / max(float(reference.abs().max()), 1e-30)
        if error > limit:
            return f"{name} differs from gather by {error:.3g} (relative max error; tolerance {limit:g} for {dtype})"
    return None


def decision(key: Hashable) -> Optional[Decision]:
    """What the check decided for ``key``.

    Args:
        key: the (device, dtype, geometry) key of the check.

    Returns:
        The stored verdict, or None when ``key`` has not been checked yet.
    """
    return _decisions.get(key)


def record(key: Hashable, description: str, error: Optional[str], started: float) -> Decision:
    """Stores the verdict for ``key`` (``started``: ``time.perf_counter()`` when its check began).

    A failed check warns once, in one line naming the geometry and the error.

    Args:
        key: the (device, dtype, geometry) key of the check.
        description: the geometry in words, for the warning and ``first_use_checks``.
        error: why the check failed, or None when it passed.
        started: ``time.perf_counter()`` when the check began.

    Returns:
        The stored verdict: ``gather`` when ``error`` is set, else ``triton``.
    """
    verdict = Decision(kernel="gather" if error else "triton", error=error,
                       check_s=round(time.perf_counter() - started, 6))
    _decisions[key] = verdict
    _descriptions[key] = description
    if error:
        warnings.warn(f"timm_lc: the Triton LC kernel failed its first-use check on {description}: {error}; "
                      f"this geometry runs the 'gather' kernel from now on", RuntimeWarning, stacklevel=2)
    return verdict


def first_use_checks() -> Dict[str, Decision]:
    """Every verdict of this process so far, for reports such as ``timm-lc doctor``.

    Returns:
        The verdicts keyed by geometry description.
    """
    return {_descriptions[key]: verdict for key, verdict in _decisions.items()}


def clear_first_use_checks() -> None:
    """Forgets every verdict: the next call of each geometry is checked again."""
    _decisions.clear()
    _descriptions.clear()
