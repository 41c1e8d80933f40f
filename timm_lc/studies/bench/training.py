"""Bench section ``training``: images/s of the CIFAR LC ResNet-20 with and without sleep, compiled and
eager, and of the conv ResNet-20, in fp32 and under bf16 autocast (fp32 master weights), side by
side in one process.

The train step (forward, backward, and the fused AdamW step ``timm-lc train`` runs) is timed per
variant; one sleep phase with the paper's settings (Hebbian, 100 iterations of 128 noise samples)
is timed on the LC net, and the throughput with sleep every N steps is
``N * batch / (N * step + sleep)``: what a run pays on average. ``vs_conv`` is each variant's
images/s over the conv net's. The LC net under ``torch.compile`` (default inductor backend, as
``timm-lc train --compile true``) is timed after its first step, which holds the compilation:
``compile_s`` is that step's excess over an eager step, ``vs_eager`` the eager step time over the
compiled one, and ``pays_after_steps`` the number of steps after which the compiled run is ahead
("never" when a compiled step is not faster). ``quick`` times small batches, one step and one
sleep, and compiles in fp32 only (on a small CPU inductor's compilation is most of the section's
time). The sleep is always timed at its full 100 iterations: its cost is not linear in them (the
composed solver gathers the pools once and builds one operator per layer).
"""
import itertools
import math
from typing import Callable, List

import torch
import torch.nn.functional as F

from timm_lc.studies.measure import time_steps
from timm_lc.train.optimizer import create_optimizer

__all__ = ["COLUMNS", "run", "sleep_phase", "train_step"]

COLUMNS = ("model", "precision", "variant", "batch", "step_ms", "sleep_ms", "images_per_s", "vs_conv", "compile_s",
           "vs_eager", "pays_after_steps")
PRECISIONS = ("fp32", "bf16")
MODEL = "lc_resnet20"
SLEEP_EVERY = (1, 10, 100)


def train_step(model: torch.nn.Module, batch: int, device: str, img_size: int,
               precision: str = "fp32") -> Callable[[], None]:
    """One training step (forward, backward, the fused AdamW step ``timm-lc train`` runs) as a closure.

    Args:
        model: the model to train, on ``device``.
        batch: images per step.
        device: where the data goes.
        img_size: the square image size.
        precision: ``fp32``, or ``bf16`` for bf16 autocast (fp32 master weights).

    Returns:
        The step closure; its first call is the warm-up.
    """
    optimizer = create_optimizer(model, "adamw", lr=1e-3, weight_decay=1e-4)  # as timm-lc train's recipes
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, img_size, img_size, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    model.train()

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def sleep_phase(model: torch.nn.Module) -> Callable[[], None]:
    """One sleep phase with the paper's settings (Hebbian, 100 iterations of 128 samples) as a closure.

    A short sleep runs first as the warm-up; each call then sleeps with the next seed.

    Args:
        model: the LC model to sleep.

    Returns:
        The sleep closure.
    """
    from timm_lc.sharing import share_weights_
    share_weights_(model, mode="hebbian", pools="paper", iterations=2, batch_size=128, seed=0)  # warm-up
    seeds = itertools.count()

    def sleep() -> None:
        share_weights_(model, mode="hebbian", pools="paper", iterations=100, batch_size=128, gamma=1e-5,
                       seed=next(seeds))
    return sleep


def run(quick: bool = True, device: str = "cpu") -> List[dict]:
    """One row per precision and variant: step time, sleep time and images/s (see the module docstring).

    Args:
        quick: small batches, one timed step and sleep, and compilation in fp32 only.
        device: where the models and data go (the batch is larger off the CPU).

    Returns:
        One dict per precision and variant (conv, lc, compiled lc, lc with a sleep every N steps) with
        the ``COLUMNS`` keys it has.
    """
    import timm
    import timm_lc.models  # noqa: F401

    on_cpu = device == "cpu"
    img_size = 32
    batch = (8 if on_cpu else 256) if quick else (64 if on_cpu else 512)
    steps, sleeps = (1, 1) if quick else (10, 3)
    rows = []
    for precision in PRECISIONS:
        torch.manual_seed(0)
        conv = timm.create_model(MODEL, locally_connected=False, img_size=img_size).to(device)
        conv_step = time_steps({"conv": train_step(conv, batch, device, img_size, precision)}, device,
                               iters=steps)["conv"]
        del conv
        lc = timm.create_model(MODEL, img_size=img_size).to(device)
        lc_step = time_steps({"lc": train_step(lc, batch, device, img_size, precision)}, device, iters=steps)["lc"]
        compiled = None
        if precision == "fp32" or not quick:
            torch._dynamo.reset()
            compiled_train = train_step(torch.compile(lc), batch, device, img_size, precision)
            first = time_steps({"compiled": compiled_train}, device, warmup=0)["compiled"]  # compiles
            compiled = (first - lc_step, time_steps({"compiled": compiled_train}, device, iters=steps)["compiled"])
        sleep_s = time_steps({"sleep": sleep_phase(lc)}, device, iters=sleeps, warmup=0)["sleep"]  # always fp32
        del lc

        def row(variant: str, step_s: float, every: int = 0) -> dict:
            ips = every * batch / (every * step_s + sleep_s) if every else batch / step_s
            return {"model": MODEL, "precision": precision, "variant": variant, "batch": batch,
                    "step_ms": round(1e3 * step_s, 2), "sleep_ms": round(1e3 * sleep_s, 1) if every else "",
                    "images_per_s": round(ips, 1), "vs_conv": round(ips / (batch / conv_step), 4)}

        rows += [row("conv", conv_step), row("lc", lc_step)]
        if compiled is not None:
            compile_s, compiled_step = compiled
            gain = lc_step - compiled_step
            rows.append({**row("lc, torch.compile", compiled_step), "compile_s": round(compile_s, 1),
                         "vs_eager": round(lc_step / compiled_step, 3),
                         "pays_after_steps": math.ceil(compile_s / gain) if gain > 0 else "never"})
        rows += [row(f"lc + hebbian sleep every {n}", lc_step, n) for n in SLEEP_EVERY]
    return rows


if __name__ == "__main__":
    from timm_lc.studies.bench import format_table
    print(format_table(run(quick=True), COLUMNS))
