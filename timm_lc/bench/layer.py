"""Benchmark section: LocallyConnected2d forward+backward against its oracles, side by side.

For each layer shape it measures, in one process and interleaved, the time of one training
step (forward + backward) of
* ``ours``: :class:`~timm_lc.layers.LocallyConnected2d`,
* ``floor``: the three contiguous batched matmuls any LC forward+backward needs
  (out = cols @ W, dW = cols^T @ dout, dcols = dout @ W^T), with nothing else,
* ``reference``: the reference code's formulation (zero-pad, unfold, einsum over a
  (C_in, C_out, H_out, W_out, k, k) weight, plain autograd),
* ``conv``: ``nn.Conv2d`` of the same shape,
and the peak memory of one training step of ``ours`` and ``reference``, each in a fresh
subprocess (peak RSS growth on the CPU, ``max_memory_allocated`` on CUDA).
"""
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from timm_lc.bench import sync
from timm_lc.layers import LocallyConnected2d


@dataclass(frozen=True)
class LayerShape:
    name: str
    batch: int
    channels: int
    size: int
    kernel: int = 3
    stride: int = 1

    @property
    def padding(self) -> int:
        return self.kernel // 2


# 3x3 layers of the paper's nets: CIFAR ResNet-20 (batch 128), half-width ImageNet ResNet-18 (batch 64)
SHAPES = [
    LayerShape("resnet20.stage1", 128, 16, 32),
    LayerShape("resnet20.stage2", 128, 32, 16),
    LayerShape("resnet20.stage3", 128, 64, 8),
    LayerShape("resnet18_half.layer1", 64, 32, 56),
    LayerShape("resnet18_half.layer2", 64, 64, 28),
    LayerShape("resnet18_half.layer3", 64, 128, 14),
    LayerShape("resnet18_half.layer4", 64, 256, 7),
]
QUICK_SHAPES = [SHAPES[0], SHAPES[2], SHAPES[5]]


class ReferenceLC(torch.nn.Module):
    """The reference code's LC formulation (pad, unfold, einsum), kept as the baseline."""

    def __init__(self, shape: LayerShape, device=None, dtype=None):
        super().__init__()
        out = (shape.size + 2 * shape.padding - shape.kernel) // shape.stride + 1
        self.shape = shape
        self.weight = torch.nn.Parameter(torch.randn(
            shape.channels, shape.channels, out, out, shape.kernel, shape.kernel, device=device, dtype=dtype) * 0.05)

    def forward(self, x):
        s = self.shape
        x = F.pad(x, [s.padding] * 4)
        patches = x.unfold(2, s.kernel, s.stride).unfold(3, s.kernel, s.stride)  # b c h w k k
        return torch.einsum("bchwkl,cohwkl->bohw", patches, self.weight)


def _make(impl: str, shape: LayerShape, device: str, dtype: torch.dtype) -> Callable[[], None]:
    """A closure running one training step of ``impl`` on ``shape``."""
    x = torch.randn(shape.batch, shape.channels, shape.size, shape.size, device=device, dtype=dtype,
                    requires_grad=True)
    if impl == "floor":
        lc = LocallyConnected2d(shape.channels, shape.channels, shape.kernel, shape.size, shape.stride,
                                shape.padding, bias=False, device="meta")
        positions = lc.output_size[0] * lc.output_size[1]
        fan_in = lc.fan_in
        cols = torch.randn(positions, shape.batch, fan_in, device=device, dtype=dtype)
        w = torch.randn(positions, fan_in, shape.channels, device=device, dtype=dtype)
        g = torch.randn(positions, shape.batch, shape.channels, device=device, dtype=dtype)

        def step():
            torch.bmm(cols, w)
            torch.bmm(cols.mT, g)
            torch.bmm(g, w.mT)
        return step
    if impl == "ours":
        module = LocallyConnected2d(shape.channels, shape.channels, shape.kernel, shape.size, shape.stride,
                                    shape.padding, bias=False, device=device, dtype=dtype)
    elif impl == "reference":
        module = ReferenceLC(shape, device=device, dtype=dtype)
    elif impl == "conv":
        module = torch.nn.Conv2d(shape.channels, shape.channels, shape.kernel, shape.stride, shape.padding,
                                 bias=False, device=device, dtype=dtype)
    else:
        raise ValueError(f"unknown implementation {impl!r}; expected ours, floor, reference or conv")

    def step():
        module(x).sum().backward()
    return step


def time_steps(steps: Dict[str, Callable[[], None]], repeats: int, device: str) -> Dict[str, float]:
    """Best-of-``repeats`` seconds per step for each closure, interleaved so noise hits all alike."""
    for step in steps.values():
        step()  # warm-up
    best = {name: float("inf") for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def measure_peak_memory(impl: str, shape: LayerShape, device: str, dtype: torch.dtype) -> int:
    """Peak bytes one training step adds beyond its inputs and parameters (run in this process).

    On the CPU: growth of the peak resident set (VmHWM, reset through /proc/self/clear_refs, as
    ru_maxrss is inherited across fork/exec); on CUDA: ``max_memory_allocated``.
    """
    step = _make(impl, shape, device, dtype)
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    base = _proc_status_kb("VmRSS")
    step()
    return (_proc_status_kb("VmHWM") - base) * 1024


def peak_memory_in_subprocess(impl: str, shape: LayerShape, device: str, dtype: torch.dtype) -> int:
    code = ("import json, sys, torch; from timm_lc.bench.layer import LayerShape, measure_peak_memory; "
            "a = json.loads(sys.argv[1]); "
            "print(measure_peak_memory(a['impl'], LayerShape(**a['shape']), a['device'], getattr(torch, a['dtype'])))")
    arg = json.dumps({"impl": impl, "shape": shape.__dict__, "device": device, "dtype": str(dtype).split(".")[-1]})
    result = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def run(quick: bool = False, device: str = "cpu") -> List[dict]:
    """Measures every shape; returns one row of timings, ratios and memory per shape."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows = []
    for shape in (QUICK_SHAPES if quick else SHAPES):
        impls = ["ours", "floor", "reference", "conv"]
        times = time_steps({i: _make(i, shape, device, dtype) for i in impls}, 3 if quick else 5, device)
        mem_ours = peak_memory_in_subprocess("ours", shape, device, dtype)
        mem_ref = peak_memory_in_subprocess("reference", shape, device, dtype)
        rows.append({
            "layer": shape.name, "batch": shape.batch, "channels": shape.channels, "size": shape.size,
            "device": device, "dtype": str(dtype).split(".")[-1],
            **{f"{i}_ms": round(times[i] * 1e3, 2) for i in impls},
            "ours_over_floor": round(times["ours"] / times["floor"], 2),
            "reference_over_ours": round(times["reference"] / times["ours"], 2),
            "ours_over_conv": round(times["ours"] / times["conv"], 2),
            "ours_peak_mb": round(mem_ours / 2 ** 20, 1),
            "reference_peak_mb": round(mem_ref / 2 ** 20, 1),
            "memory_ours_over_reference": round(mem_ours / max(mem_ref, 1), 2),
        })
    return rows


COLUMNS = ["layer", "batch", "channels", "size", "ours_ms", "floor_ms", "reference_ms", "conv_ms",
           "ours_over_floor", "reference_over_ours", "ours_peak_mb", "reference_peak_mb",
           "memory_ours_over_reference"]
