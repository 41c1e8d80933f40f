"""Measuring a step: the one timer and the one peak-memory probe of the studies, bench and doctor.

Both take a step as a closure and wait for queued CUDA work around it, so wall-clock times and
memory peaks are those of the work itself.
"""
import math
import time
from typing import Callable, Dict, Mapping, Union

import torch

__all__ = ["sync", "time_steps", "peak_memory"]

Device = Union[str, torch.device]


def sync(device: Device) -> None:
    """Waits for queued CUDA work on ``device`` (a no-op on the CPU).

    Args:
        device: the device the work runs on.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
        steps: Mapping[str, Callable[[], object]],
        device: Device,
        repeats: int = 1,
        iters: int = 1,
        warmup: int = 1,
        budget_s: float = 0.0,
        max_repeats: int = 50,
) -> Dict[str, float]:
    """Best seconds per call of each step, the steps interleaved so that noise hits all alike.

    Each step is first called ``warmup`` times; then each round times ``iters`` consecutive calls
    of every step in turn. Rounds run ``repeats`` times, and go on (up to ``max_repeats``) while
    the timed work has taken less than ``budget_s`` seconds.

    Args:
        steps: named closures, each one call of the work to time.
        device: where the work runs (CUDA work is waited for around each timing).
        repeats: the fewest rounds.
        iters: calls per timing (the time per call is their mean).
        warmup: untimed calls of each step first (autotuning, compilation, allocator warm-up).
        budget_s: keep timing rounds until this much time has been spent.
        max_repeats: the most rounds ``budget_s`` may add up to.

    Returns:
        ``{name: best seconds per call}``.

    Raises:
        ValueError: ``repeats`` or ``iters`` below 1.
    """
    if repeats < 1 or iters < 1:
        raise ValueError(f"expected repeats >= 1 and iters >= 1, got {repeats}, {iters}")
    for step in steps.values():
        for _ in range(warmup):
            step()
    best = {name: math.inf for name in steps}
    spent, rounds = 0.0, 0
    while rounds < repeats or (spent < budget_s and rounds < max_repeats):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(iters):
                step()
            sync(device)
            elapsed = time.perf_counter() - start
            best[name] = min(best[name], elapsed / iters)
            spent += elapsed
        rounds += 1
    return best


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def peak_memory(step: Callable[[], object], device: Device) -> int:
    """Peak bytes one call of ``step`` adds beyond what is held before it.

    On CUDA: ``torch.cuda.max_memory_allocated`` over the call. On the CPU (Linux): the growth of
    the peak resident set (VmHWM, reset through /proc/self/clear_refs, as ru_maxrss is inherited
    across fork/exec); memory the process freed earlier is reused, so measure in a fresh process
    for an honest CPU figure.

    Args:
        step: one call of the work to measure.
        device: where the work runs.

    Returns:
        The peak growth in bytes.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    base = _proc_status_kb("VmRSS")
    step()
    return (_proc_status_kb("VmHWM") - base) * 1024
