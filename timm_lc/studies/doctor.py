"""``timm-lc doctor``: the prepared GPU check run, every result in one JSON file.

``timm-lc doctor --device cuda --output doctor.json`` runs these sections in order, each in its
own try/except (an error is recorded in the JSON and the next section still runs):

* ``tests``: the package's CUDA checks (``timm_lc.studies.cuda_checks``, the functions the test
  suite's ``-k cuda`` tests run), in this process, so an installed wheel carries what it runs,
* ``layer``: one AMP training step (bf16 autocast, fp32 master weights; forward + backward) of a
  LocallyConnected2d per LC kernel (``triton``, ``gather``) on the ResNet-20 stage-3 shape at
  batch 512 and two others: time, ratio to the cuBLAS bmm floor (the three bf16 GEMMs of the step
  alone), reference unfold+einsum formulation over ours, achieved TFLOP/s and share of the bf16
  dense peak, peak memory, the configurations the Triton autotuner chose, and what ``auto``'s
  first-use check decided on the shape (kernel, error, the check's own seconds next to a step's),
* ``sleep``: one Hebbian sleep (paper pools) of ``lc_resnet18_half``: wall time and the peak memory
  beyond the model's weights,
* ``train``: 50 steps of ``lc_resnet20_hebb`` on the embedded digits on a 32x32 canvas under bf16
  and under fp16, each in a subprocess (Accelerate fixes the precision once per process): images/s.

Its sizes fit the default time budget on one H200 (``--budget-s``: a section that would start
later is skipped and says so), and the JSON is rewritten after every section, so a run cut short keeps
what it measured. The exit status is 0 when every section ran and the tests passed, 1 otherwise,
and 2 (with one line on stderr) when ``--device cuda`` finds no CUDA device. ``--device cpu`` is
a dry run of the same script at toy sizes with the ``gather`` kernel: it checks the
script, not the speed.
"""
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from . import cuda_checks
from .bench.layer import LayerShape, make_step
from .measure import peak_memory, sync, time_steps
from ..layers import LocallyConnected2d, first_use_checks, get_lc_kernel, set_lc_kernel
from ..layers.first_use import clear_first_use_checks
from ..layers.kernels import triton_kernels
from ..layers.lc_function import select_kernel

__all__ = ["H200_BF16_DENSE_TFLOPS", "PLANS", "SECTIONS", "Plan", "environment", "error_record", "first_use_decision",
           "run_tests", "run_layer_bench", "run_sleep", "run_train", "section_ok", "train_throughput"]

# H200 SXM dense BF16 tensor-core peak: NVIDIA's data sheet gives 1,979 TFLOP/s with 2:4 sparsity,
# half of it dense (the H100 SXM's figure: the same GH100 compute); the H200 NVL is lower (about
# 836). Pass --peak-tflops to rate against another figure.
H200_BF16_DENSE_TFLOPS = 989.4
SECTIONS = ("tests", "layer", "sleep", "train")


@dataclass(frozen=True)
class Plan:
    """What one doctor run measures: sizes, kernels and repetitions."""
    shapes: Tuple[LayerShape, ...]
    kernels: Tuple[str, ...]
    iters: int  # training steps per timing
    repeats: int  # timings per variant, best kept
    sleep_model: str
    train_model: str
    train_steps: int
    train_batch: int
    precisions: Tuple[str, ...]
    num_workers: int
    test_timeout_s: int


PLANS = {
    "cuda": Plan(
        shapes=(LayerShape("resnet20.stage3", 512, 64, 8), LayerShape("resnet20.stage1", 512, 16, 32),
                LayerShape("resnet18_half.layer2", 64, 64, 28)),
        kernels=("triton", "gather"), iters=10, repeats=5, sleep_model="lc_resnet18_half",
        train_model="lc_resnet20_hebb", train_steps=50, train_batch=256, precisions=("bf16", "fp16"),
        num_workers=8, test_timeout_s=240),
    "cpu": Plan(
        shapes=(LayerShape("resnet20.stage3", 4, 64, 8),), kernels=("gather",), iters=1, repeats=1,
        sleep_model="lc_resnet20", train_model="lc_resnet20_hebb", train_steps=2, train_batch=16,
        precisions=("bf16",), num_workers=0, test_timeout_s=240),
}


def error_record(err: BaseException) -> Dict[str, Any]:
    """What a failed section or row records instead of its result (the doctor never stops at an error).

    Args:
        err: the exception being handled.

    Returns:
        ``error`` (type and message) and the last 4000 characters of its ``traceback``.
    """
    return {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-4000:]}


def _tail(text: str, chars: int = 4000) -> str:
    return text[-chars:] if text else ""


def environment(device: str, peak_tflops: float) -> Dict[str, Any]:
    """The software and device the doctor runs on, for the JSON's header.

    Args:
        device: 'cuda' or 'cpu'.
        peak_tflops: the bf16 dense peak the layer section rates against (recorded as given).

    Returns:
        The Python, torch, CUDA and Triton versions (or why Triton does not import), the GPU's name,
        capability and memory (CUDA), the LC kernel setting and what ``auto`` resolves to for groups 1 and 2.
    """
    env: Dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "device": device, "peak_bf16_tflops": peak_tflops}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError as err:
        env["triton"] = f"not importable: {err}"
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2 ** 30, 1))
    env["lc_kernel"] = get_lc_kernel()
    probe = torch.zeros(1, device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    env["auto_resolves_to"] = {"groups=1": select_kernel(probe, 1), "groups=2": select_kernel(probe, 2)}
    return env


# ---------------------------------------------------------------- tests
def run_tests(timeout_s: float) -> Dict[str, Any]:
    """Runs the package's CUDA checks (``cuda_checks.checks()``) in this process.

    Args:
        timeout_s: checks that would start after this many seconds are skipped (and fail the section).

    Returns:
        ``passed`` (every check ran and passed), a pytest-like ``summary``, the ``failures`` (name,
        error) and ``wall_s``; without a CUDA device no check runs and the section passes.
    """
    start = time.perf_counter()
    if not torch.cuda.is_available():
        return {"passed": True, "summary": "no CUDA device: the CUDA checks did not run", "failures": [],
                "wall_s": 0.0}
    passed, skipped, failures = 0, 0, []
    for name, check in cuda_checks.checks():
        if time.perf_counter() - start > timeout_s:
            skipped += 1
            continue
        try:
            check()
            passed += 1
        except Exception as err:  # noqa: BLE001 - recorded, the next check still runs
            failures.append({"check": name, "error": f"{type(err).__name__}: {err}"[:2000]})
    summary = f"{passed} passed, {len(failures)} failed" + (f", {skipped} skipped (time)" if skipped else "")
    return {"passed": not failures and not skipped, "summary": summary, "failures": failures,
            "wall_s": round(time.perf_counter() - start, 1)}


# ---------------------------------------------------------------- layer
def _step_flops(shape: LayerShape) -> float:
    """FLOPs of one LC training step: three GEMMs (forward, input and weight gradients) per position."""
    lc = LocallyConnected2d(shape.channels, shape.channels, shape.kernel, shape.size, shape.stride,
                            shape.padding, bias=False, device="meta")
    positions = lc.output_size[0] * lc.output_size[1]
    return 3 * 2.0 * positions * shape.channels * lc.fan_in * shape.batch


def _amp(impl: str, shape: LayerShape, device: str, kernel: Optional[str] = None) -> Callable[[], None]:
    """A bf16-autocast training step of ``impl`` (fp32 parameters), ``kernel`` selected first (variants interleave)."""
    step = make_step(impl, shape, device, torch.float32, autocast=torch.bfloat16)

    def run() -> None:
        if kernel is not None:
            set_lc_kernel(kernel)
        step()
    return run


def _peak_mb(step: Callable[[], None], device: str) -> Optional[float]:
    """Runs ``step`` once; the CUDA memory it allocates beyond what is already held, in MiB (None on
    the CPU dry run)."""
    if device != "cuda":
        step()
        return None
    return round(peak_memory(step, device) / 2 ** 20, 1)


def _autotuned_configs() -> Dict[str, str]:
    """The configurations the Triton autotuner picked for the last shape it ran."""
    module = triton_kernels()
    names = ("_lc_forward_kernel", "_lc_input_grad_kernel", "_lc_weight_grad_kernel")
    return {name: str(getattr(getattr(module, name), "best_config", None)) for name in names}


def first_use_decision(shape: LayerShape, device: str) -> Dict[str, Any]:
    """What ``auto``'s first-use check decides on ``shape`` (one AMP step, as the timed ones), and its cost.

    The check runs twice: on the first step (with the Triton compilation and autotuning it
    triggers), then, after its verdicts are forgotten, on compiled kernels, whose ``check_s``
    is the check's own one-time cost, reported next to a steady step's time. The LC kernel setting
    is restored afterwards.

    Args:
        shape: the layer shape to check.
        device: where to run it.

    Returns:
        The checked ``geometry``, the chosen ``kernel``, the check's ``error``, ``check_ms``, ``step_ms``
        and ``check_over_step``; or a ``decision`` note and ``step_ms`` when ``auto`` made no check.
    """
    step = _amp("ours", shape, device, "auto")
    previous = get_lc_kernel()
    try:
        step()
        sync(device)
        clear_first_use_checks()
        step()
        sync(device)
        decisions = first_use_checks()
        start = time.perf_counter()
        step()
        sync(device)
        step_s = time.perf_counter() - start
    finally:
        set_lc_kernel(previous)
    if not decisions:
        return {"decision": "no check: auto does not try triton here (runs gather)", "step_ms": round(step_s * 1e3, 3)}
    (geometry, verdict), = decisions.items()
    return {"geometry": geometry, "kernel": verdict["kernel"], "error": verdict["error"],
            "check_ms": round(verdict["check_s"] * 1e3, 3), "step_ms": round(step_s * 1e3, 3),
            "check_over_step": round(verdict["check_s"] / step_s, 3)}


def _layer_row(shape: LayerShape, plan: Plan, device: str, peak_tflops: float) -> Dict[str, Any]:
    steps = {f"ours[{k}]": _amp("ours", shape, device, k) for k in plan.kernels}
    steps["floor"] = make_step("floor", shape, device, torch.bfloat16)
    steps["reference"] = _amp("reference", shape, device)
    steps["conv"] = _amp("conv", shape, device)
    # two warm-up steps each: autotuning and compilation happen there
    times = time_steps(steps, device, repeats=plan.repeats, iters=plan.iters, warmup=2)
    flops = _step_flops(shape)
    row: Dict[str, Any] = {
        "layer": shape.name, "batch": shape.batch, "channels": shape.channels, "size": shape.size,
        "gflop_per_step": round(flops / 1e9, 3),
        **{f"{name}_ms": round(times[name] * 1e3, 4) for name in ("floor", "reference", "conv")},
        "floor_tflops": round(flops / times["floor"] / 1e12, 3),
        "reference_peak_mb": _peak_mb(steps["reference"], device),
    }
    for kernel in plan.kernels:
        name = f"ours[{kernel}]"
        seconds = times[name]
        tflops = flops / seconds / 1e12
        row[kernel] = {
            "ms": round(seconds * 1e3, 4), "over_floor": round(seconds / times["floor"], 3),
            "reference_over_ours": round(times["reference"] / seconds, 3),
            "over_conv": round(seconds / times["conv"], 3), "tflops": round(tflops, 3),
            "percent_of_peak": round(100 * tflops / peak_tflops, 2), "peak_mb": _peak_mb(steps[name], device),
        }
        if kernel == "triton":  # only this variant runs the Triton kernels: their last key is this shape
            row[kernel]["autotuned"] = _autotuned_configs()
    if {"triton", "gather"} <= set(plan.kernels):
        row["gather_over_triton"] = round(times["ours[gather]"] / times["ours[triton]"], 3)
    row["auto_first_use"] = first_use_decision(shape, device)
    return row


def run_layer_bench(plan: Plan, device: str, peak_tflops: float) -> Dict[str, Any]:
    """Times one AMP training step per LC kernel and the baselines, on each of the plan's layer shapes.

    An error in one shape is recorded in its row, the others still run; the LC kernel setting is
    restored afterwards.

    Args:
        plan: the doctor's plan (``shapes``, ``kernels``, ``iters``, ``repeats``).
        device: where to run the steps.
        peak_tflops: the bf16 dense peak each kernel's throughput is rated against.

    Returns:
        ``precision`` (a note on the step's dtypes) and ``rows``, one per shape: times of each kernel
        and baseline, their ratios, TFLOP/s, share of the peak, peak memory and ``auto``'s first-use decision.
    """
    previous = get_lc_kernel()
    rows = []
    try:
        for shape in plan.shapes:
            try:
                rows.append(_layer_row(shape, plan, device, peak_tflops))
            except Exception as err:  # noqa: BLE001 - recorded, the next shape still runs
                rows.append({"layer": shape.name, "batch": shape.batch, **error_record(err)})
            if device == "cuda":
                torch.cuda.empty_cache()
    finally:
        set_lc_kernel(previous)
    return {"precision": "bf16 autocast, fp32 parameters (floor: bf16 bmm)", "rows": rows}


# ---------------------------------------------------------------- sleep
_SLEEP_KEYS = ("snr_before", "snr", "deviation_before", "deviation_after", "rolled_back")


def run_sleep(plan: Plan, device: str) -> Dict[str, Any]:
    """One Hebbian sleep with the paper's pools and defaults on a freshly initialised model.

    Args:
        plan: the doctor's plan (``sleep_model``).
        device: where to build and sleep the model.

    Returns:
        Wall time, the sharing report's aggregates, whether the weights are finite and (CUDA) the
        peak memory beyond the model's weights.
    """
    import timm
    from ..sharing import share_weights_

    with torch.device(device):
        model = timm.create_model(plan.sleep_model)
    reports, seconds = [], {}

    def sleep() -> None:  # one sleep, timed, under the peak-memory probe
        seconds.update(time_steps({"sleep": lambda: reports.append(
            share_weights_(model, mode="hebbian", pools="paper"))}, device, warmup=0))

    peak = _peak_mb(sleep, device)
    report, wall = reports[0], seconds["sleep"]
    result: Dict[str, Any] = {
        "model": plan.sleep_model, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "wall_s": round(wall, 3), "layers": len(report.layers),
        **{k: getattr(report, k) for k in _SLEEP_KEYS if hasattr(report, k)},
        "weights_finite": all(bool(torch.isfinite(p).all()) for p in model.parameters()),
    }
    if peak is not None:
        result["peak_mb"] = peak  # beyond the model's own weights
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------- train
def train_throughput(model: str, precision: str, steps: int, batch_size: int, num_workers: int,
                     output_dir: str) -> Dict[str, Any]:
    """Trains ``model`` for ``steps`` steps on the demo digits on a 32x32 canvas; its images/s.

    One train record every 10 steps (``steps`` < 10: one at the end); evaluation and the checkpoint
    run once, after the last step, outside the timed intervals. The first interval holds the
    autotuning and compilation, so ``images_per_s`` averages the later ones where there are any.
    The rate is the training loop's: data loading (the demo's 1,437 images are a 5-batch epoch at
    batch 256, with the loader's workers started anew each epoch) and the model's sleeps included.

    Args:
        model: the timm name of the model to train.
        precision: Accelerate's mixed precision ('bf16', 'fp16' or 'no').
        steps: optimiser steps to train.
        batch_size: images per step.
        num_workers: data loader workers.
        output_dir: the run directory (overwritten).

    Returns:
        ``images_per_s`` (mean over the intervals after the first), the rate and sleep fraction of each
        interval, steps, training time, test accuracy and the LC kernel setting.
    """
    from ..run_dir import METRICS_NAME
    from timm_lc_settings.train import config_from_dict
    from ..train.loop import train
    from ..train.metrics import read_metrics

    cfg = config_from_dict({
        "model": model, "dataset": "demo", "canvas_size": 32, "max_steps": steps, "epochs": 10 ** 6,
        "batch_size": batch_size, "mixed_precision": precision, "num_workers": num_workers,
        "log_every": min(10, steps), "eval_every": 10 ** 9, "checkpoint_every": 10 ** 9,
        "progress": False, "plots": False, "output_dir": output_dir, "overwrite": True, "seed": 0,
    })
    final = train(cfg)
    records = [r for r in read_metrics(Path(output_dir) / METRICS_NAME) if r.get("event") == "train"]
    rates = [r["images_per_s"] for r in records]
    steady = rates[1:] or rates
    return {
        "model": model, "precision": precision, "batch": batch_size, "steps": final["step"],
        "images_per_s": round(sum(steady) / len(steady), 1),
        "images_per_s_per_interval": [round(r, 1) for r in rates],
        "sleep_fraction": [round(r.get("sleep_fraction", 0.0), 4) for r in records],
        "train_time_s": round(final["train_time_s"], 2), "test_acc": final.get("test_acc"),
        "lc_kernel": get_lc_kernel(),
    }


def _train_subprocess(kwargs: Dict[str, Any], timeout_s: float) -> Dict[str, Any]:
    code = ("import json, sys; from timm_lc.studies.doctor import train_throughput; "
            "print(json.dumps(train_throughput(**json.loads(sys.argv[1]))))")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True,
                            timeout=timeout_s)
    if result.returncode != 0:
        return {"precision": kwargs["precision"], "error": f"training exited with status {result.returncode}",
                "output_tail": _tail(result.stdout, 2000) + _tail(result.stderr)}
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["process_wall_s"] = round(time.perf_counter() - start, 1)
    return row


def run_train(plan: Plan, deadline: float) -> Dict[str, Any]:
    """One training subprocess per precision, each in its own temporary run directory.

    Args:
        plan: the doctor's plan (``train_model``, ``precisions``, ``train_steps``, ``train_batch``, ``num_workers``).
        deadline: a ``time.perf_counter()`` time; each subprocess may run until then, and at least 60 s.

    Returns:
        ``rows``: each precision's ``train_throughput`` result, or its error (a failed or timed-out
        subprocess is recorded, the next precision still runs).
    """
    rows = []
    for precision in plan.precisions:
        with tempfile.TemporaryDirectory(prefix="timm-lc-doctor-") as tmp:
            kwargs = dict(model=plan.train_model, precision=precision, steps=plan.train_steps,
                          batch_size=plan.train_batch, num_workers=plan.num_workers, output_dir=tmp)
            try:
                rows.append(_train_subprocess(kwargs, max(deadline - time.perf_counter(), 60.0)))
            except Exception as err:  # noqa: BLE001 - recorded, the next precision still runs
                rows.append({"precision": precision, **error_record(err)})
    return {"rows": rows}


# ---------------------------------------------------------------- driver
def section_ok(name: str, result: Dict[str, Any]) -> bool:
    """Whether a section's result counts as a success for the exit status.

    Args:
        name: the section's name (one of ``SECTIONS``).
        result: what the section recorded.

    Returns:
        False if the section erred or was skipped, the tests did not pass, or any of its rows holds an error.
    """
    if "error" in result or "skipped" in result:
        return False
    if name == "tests":
        return bool(result.get("passed"))
    return not any("error" in row for row in result.get("rows", []))
