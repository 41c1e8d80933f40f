"""Benchmark section: LocallyConnected2d forward+backward against its oracles, side by side.

For each layer shape (the 3x3 layers of the paper's nets, stride-2 downsampling layers included)
and precision (fp32; bf16 autocast, where the floor is the same matmuls in bf16) it measures, in
one process and interleaved, the time of one training step (forward + backward) of
* ``ours``: :class:`~timm_lc.layers.LocallyConnected2d`,
* ``floor``: the three contiguous batched matmuls any LC forward+backward needs
  (out = cols @ W, dW = cols^T @ dout, dcols = dout @ W^T) into preallocated outputs, with
  nothing else (fresh outputs would add the page faults of mapping up to k^2 activations' worth
  of new memory on every step, which the CPU allocator returns to the system),
* ``reference``: the reference code's formulation (zero-pad, unfold, einsum over a
  (C_in, C_out, H_out, W_out, k, k) weight, plain autograd),
* ``conv``: ``nn.Conv2d`` of the same shape,
and the peak memory of one training step of ``ours`` and ``reference``, each in a fresh
subprocess (peak RSS growth on the CPU, ``max_memory_allocated`` on CUDA).
"""
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from timm_lc.layers import LocallyConnected2d
from timm_lc.studies.measure import peak_memory, time_steps


@dataclass(frozen=True)
class LayerShape:
    """One layer of the bench: a k x k LC layer on a square input (padding k // 2)."""
    name: str
    batch: int
    channels: int
    size: int
    kernel: int = 3
    stride: int = 1
    out_channels: int = 0  # 0: same as channels

    @property
    def padding(self) -> int:
        return self.kernel // 2

    @property
    def outputs(self) -> int:
        return self.out_channels or self.channels

    @property
    def output_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1


# 3x3 layers of the paper's nets: CIFAR ResNet-20 (batch 128), half-width ImageNet ResNet-18 (batch 64),
# each stage's first (stride-2, channel-doubling) layer included
SHAPES = [
    LayerShape("resnet20.stage1", 128, 16, 32),
    LayerShape("resnet20.stage2", 128, 32, 16),
    LayerShape("resnet20.stage3", 128, 64, 8),
    LayerShape("resnet20.stage2.down", 128, 16, 32, stride=2, out_channels=32),
    LayerShape("resnet20.stage3.down", 128, 32, 16, stride=2, out_channels=64),
    LayerShape("resnet18_half.layer1", 64, 32, 56),
    LayerShape("resnet18_half.layer2", 64, 64, 28),
    LayerShape("resnet18_half.layer3", 64, 128, 14),
    LayerShape("resnet18_half.layer4", 64, 256, 7),
    LayerShape("resnet18_half.layer2.down", 64, 32, 56, stride=2, out_channels=64),
    LayerShape("resnet18_half.layer4.down", 64, 128, 14, stride=2, out_channels=256),
]
QUICK_SHAPES = [SHAPES[0], SHAPES[3], SHAPES[7]]
PRECISIONS = ("fp32", "bf16")


class ReferenceLC(torch.nn.Module):
    """The reference code's LC formulation (pad, unfold, einsum), kept as the baseline."""

    def __init__(self, shape: LayerShape, device=None, dtype=None):
        super().__init__()
        out = shape.output_size
        self.shape = shape
        self.weight = torch.nn.Parameter(torch.randn(
            shape.channels, shape.outputs, out, out, shape.kernel, shape.kernel, device=device, dtype=dtype) * 0.05)

    def forward(self, x):
        s = self.shape
        x = F.pad(x, [s.padding] * 4)
        patches = x.unfold(2, s.kernel, s.stride).unfold(3, s.kernel, s.stride)  # b c h w k k
        return torch.einsum("bchwkl,cohwkl->bohw", patches, self.weight)


def make_step(impl: str, shape: LayerShape, device: str, dtype: torch.dtype,
              autocast: Optional[torch.dtype] = None) -> Callable[[], None]:
    """A closure running one training step (forward + backward) of ``impl`` on ``shape``.

    Args:
        impl: ``ours`` (LocallyConnected2d), ``floor`` (its three batched matmuls alone, in the
            precision they run in), ``reference`` (pad + unfold + einsum) or ``conv`` (nn.Conv2d).
        shape: the layer and batch.
        device: where to allocate.
        dtype: the parameters' and input's dtype.
        autocast: run under autocast to this dtype (None: no autocast).

    Returns:
        The step closure (its input and parameters allocated once).

    Raises:
        ValueError: an unknown ``impl``.
    """
    x = torch.randn(shape.batch, shape.channels, shape.size, shape.size, device=device, dtype=dtype,
                    requires_grad=True)
    if impl == "floor":  # the matmuls in the precision they run in: autocast's dtype when given
        mm_dtype = autocast or dtype
        positions, fan_in = shape.output_size ** 2, shape.channels * shape.kernel ** 2
        cols = torch.randn(positions, shape.batch, fan_in, device=device, dtype=mm_dtype)
        w = torch.randn(positions, fan_in, shape.outputs, device=device, dtype=mm_dtype)
        g = torch.randn(positions, shape.batch, shape.outputs, device=device, dtype=mm_dtype)
        out, grad_w, grad_cols = torch.empty_like(g), torch.empty_like(w), torch.empty_like(cols)

        def step():
            torch.bmm(cols, w, out=out)
            torch.bmm(cols.mT, g, out=grad_w)
            torch.bmm(g, w.mT, out=grad_cols)
        return step
    if impl == "ours":
        module = LocallyConnected2d(shape.channels, shape.outputs, shape.kernel, shape.size, shape.stride,
                                    shape.padding, bias=False, device=device, dtype=dtype)
    elif impl == "reference":
        module = ReferenceLC(shape, device=device, dtype=dtype)
    elif impl == "conv":
        module = torch.nn.Conv2d(shape.channels, shape.outputs, shape.kernel, shape.stride, shape.padding,
                                 bias=False, device=device, dtype=dtype)
    else:
        raise ValueError(f"unknown implementation {impl!r}; expected ours, floor, reference or conv")

    def step():
        with torch.autocast(torch.device(device).type, dtype=autocast or torch.bfloat16,
                            enabled=autocast is not None):
            out = module(x)
        out.float().sum().backward()
    return step


def measure_peak_memory(impl: str, shape: LayerShape, device: str, dtype: torch.dtype) -> int:
    """Peak bytes one training step of ``impl`` adds beyond its inputs and parameters, in this process
    (``timm_lc.studies.measure.peak_memory``)."""
    return peak_memory(make_step(impl, shape, device, dtype), device)


def peak_memory_in_subprocess(impl: str, shape: LayerShape, device: str, dtype: torch.dtype) -> int:
    """``measure_peak_memory`` in a fresh Python process (memory freed earlier here is not reused)."""
    code = ("import json, sys, torch; from timm_lc.studies.bench.layer import LayerShape, measure_peak_memory; "
            "a = json.loads(sys.argv[1]); "
            "print(measure_peak_memory(a['impl'], LayerShape(**a['shape']), a['device'], getattr(torch, a['dtype'])))")
    arg = json.dumps({"impl": impl, "shape": shape.__dict__, "device": device, "dtype": str(dtype).split(".")[-1]})
    result = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def run(quick: bool = False, device: str = "cpu") -> List[dict]:
    """Measures every shape in fp32 and under bf16 autocast; one row of timings, ratios and memory each."""
    rows = []
    for precision in PRECISIONS:
        autocast = torch.bfloat16 if precision == "bf16" else None
        for shape in (QUICK_SHAPES if quick else SHAPES):
            impls = ["ours", "floor", "reference", "conv"]
            times = time_steps({i: make_step(i, shape, device, torch.float32, autocast) for i in impls},
                               device, repeats=3 if quick else 5)
            row = {"layer": shape.name, "precision": precision, "batch": shape.batch, "channels": shape.channels,
                   "out_channels": shape.outputs, "size": shape.size, "stride": shape.stride, "device": device,
                   **{f"{i}_ms": round(times[i] * 1e3, 2) for i in impls},
                   "ours_over_floor": round(times["ours"] / times["floor"], 2),
                   "reference_over_ours": round(times["reference"] / times["ours"], 2),
                   "ours_over_conv": round(times["ours"] / times["conv"], 2)}
            if autocast is None:  # memory: fp32, each in a fresh process
                mem_ours = peak_memory_in_subprocess("ours", shape, device, torch.float32)
                mem_ref = peak_memory_in_subprocess("reference", shape, device, torch.float32)
                row.update(ours_peak_mb=round(mem_ours / 2 ** 20, 1), reference_peak_mb=round(mem_ref / 2 ** 20, 1),
                           memory_ours_over_reference=round(mem_ours / max(mem_ref, 1), 2))
            rows.append(row)
    return rows


COLUMNS = ["layer", "precision", "batch", "channels", "out_channels", "size", "stride", "ours_ms", "floor_ms",
           "reference_ms", "conv_ms", "ours_over_floor", "reference_over_ours", "ours_peak_mb", "reference_peak_mb",
           "memory_ours_over_reference"]
