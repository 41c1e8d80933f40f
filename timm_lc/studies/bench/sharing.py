"""Benchmark section: the cost of the Hebbian sleep phase.

1. ``iteration`` rows: one sleep iteration of a layer (noise draw + the two batched GEMMs + the
   anchor update; the once-per-sleep gather / write-back is timed apart and added to the sleep)
   against its GEMM floor: the same two GEMMs (``Z = D @ X``, ``D += Z @ X^T``) on preallocated
   tensors.
2. ``overhead`` rows: the sleep as a fraction of training time at the paper's setting, for the
   CIFAR ResNet-20 (batch 512) and the half-width ImageNet ResNet-18 (batch 256): one sleep of
   100 x 128 samples every 10 optimiser steps, ``overhead = sleep / (10 * train_step)``. Both are
   summed over the model's LocallyConnected2d layers (shapes read from ``timm.create_model`` on
   the meta device, one measurement per distinct shape times its count): the train step is
   forward + backward at two small batches, extrapolated linearly to the paper's batch, plus the
   (fused) AdamW step ``timm-lc train`` runs on the layer's parameters; BatchNorm, activations and
   the head are not counted, so the overhead is slightly overstated. ``overhead_flops`` is the same
   ratio in multiply-adds (hardware independent; training = 3 x batch x LC weights per step),
   ``overhead_iterate_flops`` what it would be if every layer updated its deviations each step
   (the reference's way, no ``compose`` solver).
"""
from collections import Counter
from typing import Callable, Dict, List, Tuple

import torch

from timm_lc.layers import LocallyConnected2d
from timm_lc.sharing.blocks import gather_blocks, scatter_blocks_
from timm_lc.sharing.hebbian import HebbianRule, choose_solver, draw_noise, identity_states
from timm_lc.sharing.pools import find_pools
from timm_lc.sharing.schedule import optimal_step
from timm_lc.studies.measure import time_steps
from timm_lc.train.optimizer import create_optimizer

COLUMNS = ("kind", "model", "layer", "count", "fan_in", "pooled_rows", "solver", "iteration_ms", "gemm_floor_ms",
           "vs_floor", "per_sleep_ms", "sleep_s", "train_step_s", "batch", "overhead", "overhead_flops",
           "overhead_iterate_flops")

# (model, the paper's training batch, the two batches measured (quick, full))
MODELS = (("lc_resnet20", 512, ((32, 128), (128, 512))), ("lc_resnet18_half", 256, ((4, 16), (16, 64))))
ITERATIONS, SAMPLES, EVERY = 100, 128, 10


def _time(fn: Callable[[], object], device: torch.device, budget: float) -> float:
    """Best wall time of repeated calls (one warm-up, then >= 2 and until ``budget`` s), in seconds."""
    return time_steps({"fn": fn}, device, repeats=2, budget_s=budget)["fn"]


def _geometry(layer: LocallyConnected2d) -> Tuple:
    return (layer.in_channels, layer.out_channels, layer.kernel_size, layer.input_size, layer.stride,
            layer.pads, layer.dilation, layer.groups, layer.bias is not None)


def _build(geometry: Tuple, device: torch.device) -> LocallyConnected2d:
    cin, cout, k, size, stride, pads, dilation, groups, bias = geometry
    return LocallyConnected2d(cin, cout, k, size, stride=stride, padding=pads, dilation=dilation, groups=groups,
                              bias=bias, device=device)


def _label(geometry: Tuple) -> str:
    cin, cout, k, size, stride, _, _, groups, _ = geometry
    s = f"{cin}->{cout} {k[0]}x{k[1]} @{size[0]}x{size[1]}"
    return s + (f" s{stride[0]}" if stride != (1, 1) else "") + (f" g{groups}" if groups != 1 else "")


def model_geometries(name: str) -> Counter:
    """Distinct LocallyConnected2d geometries of a registered timm model and how often each occurs."""
    import timm
    import timm_lc.models  # noqa: F401  (registers the lc_resnet* models)
    with torch.device("meta"):
        model = timm.create_model(name)
    return Counter(_geometry(m) for m in model.modules() if isinstance(m, LocallyConnected2d))


def sleep_iteration(layer: LocallyConnected2d, quick: bool) -> Dict[str, float]:
    """One Hebbian iteration, the once-per-sleep work, and the GEMM floor of an iteration, in seconds.

    Uses the sleep's own building blocks (``gather_blocks``, ``choose_solver``, ``draw_noise``,
    ``HebbianRule``, ``scatter_blocks_``): the timed iteration is the body of ``sleep_layer_``'s loop
    on the solver's state (the pooled deviations for 'iterate', the d x d matrix K for 'compose'),
    the once-per-sleep part is the gather, for 'compose' the product ``D_0 K``, and the write-back.
    """
    device = layer.weight.device
    pools = find_pools(layer, "paper")
    budget = 0.3 if quick else 2.0
    original = layer.weight.detach().clone()
    rule = HebbianRule()
    with torch.no_grad():
        work: Dict[str, object] = {}

        def per_sleep() -> None:  # the gather, for 'compose' the product D_0 K, and the write-back
            blocks = gather_blocks(layer, pools)
            solver = choose_solver("auto", rule, False, blocks, ITERATIONS, SAMPLES)
            states = identity_states(blocks) if solver == "compose" else blocks
            if solver == "compose":
                for block, state in zip(blocks, states):
                    block.dev = torch.bmm(block.dev, state.dev)
            scatter_blocks_(layer, blocks)
            work.update(blocks=blocks, solver=solver, states=states)

        fixed = time_steps({"per_sleep": per_sleep}, device, warmup=0)["per_sleep"]
        blocks, solver, states = work.pop("blocks"), work.pop("solver"), work.pop("states")
        layer.weight.copy_(original)
        del original
        anchors = [state.dev.clone() for state in states]
        generator = torch.Generator(device=device).manual_seed(0)
        step = optimal_step(layer.fan_in, SAMPLES, 1e-5, pools.multiplicity)

        def iteration():
            noise = draw_noise(layer, SAMPLES, generator)
            for state, anchor in zip(states, anchors):
                rule(state, state.inputs(noise), step, 1e-5, anchor, None)

        per_iteration = _time(iteration, device, budget)
        del anchors, blocks
        x = torch.randn(layer.groups, layer.fan_in, SAMPLES, device=device)
        zs = [torch.empty(state.dev.shape[0], state.dev.shape[1], SAMPLES, device=device) for state in states]

        def floor():
            for state, z in zip(states, zs):
                torch.bmm(state.dev, x, out=z)
                state.dev.baddbmm_(z, x.transpose(1, 2), alpha=-1e-6)

        floor_time = _time(floor, device, budget)
    rows, g, d = pools.num_shared * layer.out_channels, layer.groups, layer.fan_in
    macs_iterate = 2 * ITERATIONS * SAMPLES * rows * d
    macs = macs_iterate if solver == "iterate" else 2 * ITERATIONS * SAMPLES * g * d * d + rows * d * d
    return {"iteration": per_iteration, "fixed": fixed, "floor": floor_time, "solver": solver, "rows": rows,
            "macs": macs, "macs_iterate": macs_iterate, "train_macs_per_image": layer.weight.numel()}


def train_step(layer: LocallyConnected2d, batches: Tuple[int, int], paper_batch: int, quick: bool) -> float:
    """Forward + backward (extrapolated linearly to ``paper_batch``) plus timm-lc train's AdamW step, in seconds."""
    device = layer.weight.device
    times = []
    for b in batches:
        x = torch.randn(b, layer.in_channels, *layer.input_size, device=device, requires_grad=True)

        def step():
            layer.zero_grad(set_to_none=True)
            layer(x).square().mean().backward()
        times.append(_time(step, device, 0.3 if quick else 2.0))
    slope = max((times[1] - times[0]) / (batches[1] - batches[0]), 0.0)
    forward_backward = times[0] + slope * (paper_batch - batches[0])
    optimizer = create_optimizer(layer, "adamw", lr=1e-3, weight_decay=1e-4)
    optimizer_time = _time(optimizer.step, device, 0.3 if quick else 2.0)
    del optimizer
    return forward_backward + optimizer_time


def run(quick: bool = True, device: str = "cpu") -> List[dict]:
    """Measured rows of both parts (see the module docstring); ``quick`` uses fewer repeats."""
    device = torch.device(device)
    rows: List[dict] = []
    cache: Dict[Tuple, Dict[str, float]] = {}
    for name, paper_batch, measured in MODELS:
        batches = measured[0] if quick else measured[1]
        sleep_total, step_total = 0.0, 0.0
        macs = {"sleep": 0, "iterate": 0, "train": 0}
        for geometry, count in model_geometries(name).items():
            torch.manual_seed(0)
            layer = _build(geometry, device)
            if geometry not in cache:
                cost = sleep_iteration(layer, quick)
                cost["step"] = train_step(layer, batches, paper_batch, quick)
                cache[geometry] = cost
                rows.append({
                    "kind": "iteration", "model": name, "layer": _label(geometry), "count": count,
                    "fan_in": layer.fan_in, "pooled_rows": int(cost["rows"]), "solver": cost["solver"],
                    "iteration_ms": round(cost["iteration"] * 1e3, 2), "gemm_floor_ms": round(cost["floor"] * 1e3, 2),
                    "vs_floor": round(cost["iteration"] / cost["floor"], 2) if cost["floor"] > 0 else None,
                    "per_sleep_ms": round(cost["fixed"] * 1e3, 1)})
            cost = cache[geometry]
            del layer
            sleep_total += count * (cost["fixed"] + ITERATIONS * cost["iteration"])
            step_total += count * cost["step"]
            macs["sleep"] += count * cost["macs"]
            macs["iterate"] += count * cost["macs_iterate"]
            macs["train"] += count * 3 * paper_batch * cost["train_macs_per_image"]  # forward + 2x backward
        rows.append({"kind": "overhead", "model": name, "layer": f"train step fit at batches {batches}",
                     "sleep_s": round(sleep_total, 3),
                     "train_step_s": round(step_total, 3), "batch": paper_batch,
                     "overhead": round(sleep_total / (EVERY * step_total), 3),
                     "overhead_flops": round(macs["sleep"] / (EVERY * macs["train"]), 3),
                     "overhead_iterate_flops": round(macs["iterate"] / (EVERY * macs["train"]), 3)})
    return rows
