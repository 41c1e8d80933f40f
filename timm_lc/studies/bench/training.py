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
import math
import time
from typing import List, Tuple

import torch
import torch.nn.functional as F

from timm_lc.studies.bench import sync
from timm_lc.train.optimizer import create_optimizer

__all__ = ["COLUMNS", "run"]

COLUMNS = ("model", "precision", "variant", "batch", "step_ms", "sleep_ms", "images_per_s", "vs_conv", "compile_s",
           "vs_eager", "pays_after_steps")
PRECISIONS = ("fp32", "bf16")
MODEL = "lc_resnet20"
SLEEP_EVERY = (1, 10, 100)


def _time_steps(model, batch: int, steps: int, device: str, img_size: int,
                precision: str = "fp32") -> Tuple[float, float]:
    """(seconds of the first step, seconds per step after it), under bf16 autocast for ``precision="bf16"``."""
    optimizer = create_optimizer(model, "adamw", lr=1e-3, weight_decay=1e-4)  # as timm-lc train's recipes
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, img_size, img_size, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    model.train()

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return first, (time.perf_counter() - start) / steps


def _time_sleep(model, repeats: int, device: str) -> float:
    """Seconds per sleep phase with the paper's settings (Hebbian, 100 iterations of 128 samples)."""
    from timm_lc.sharing import share_weights_
    share_weights_(model, mode="hebbian", pools="paper", iterations=2, batch_size=128, seed=0)  # warm-up
    sync(device)
    start = time.perf_counter()
    for i in range(repeats):
        share_weights_(model, mode="hebbian", pools="paper", iterations=100, batch_size=128, gamma=1e-5,
                       seed=i)
    sync(device)
    return (time.perf_counter() - start) / repeats


def run(quick: bool = True, device: str = "cpu") -> List[dict]:
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
        conv_step = _time_steps(conv, batch, steps, device, img_size, precision)[1]
        del conv
        lc = timm.create_model(MODEL, img_size=img_size).to(device)
        lc_step = _time_steps(lc, batch, steps, device, img_size, precision)[1]
        compiled = None
        if precision == "fp32" or not quick:
            torch._dynamo.reset()
            first, compiled_step = _time_steps(torch.compile(lc), batch, steps, device, img_size, precision)
            compiled = (first - lc_step, compiled_step)
        sleep_s = _time_sleep(lc, sleeps, device)  # always fp32
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
