"""Bench section ``busy``: the slowdown when another process keeps one core busy.

Each workload is timed idle and then while a second process runs a busy loop (as a data-loader
worker or any other job would), side by side in one run: one LC layer training step (the
CIFAR ResNet-20's first stage), one training step of ``lc_resnet20`` and of its conv twin, and
one Hebbian sleep of ``lc_resnet20`` with the paper's settings. Losing one of two cores should at
most double a time; more than that means the work waits on a descheduled thread. ``spin`` is the
OpenMP spin count in effect (``GOMP_SPINCOUNT``: 1000 under the ``timm-lc`` command, see
``timm_lc_settings.openmp``; libgomp's default 300000 otherwise).
"""
import os
import subprocess
import sys
import time
from typing import List

import torch
from timm_lc_settings.openmp import SPIN_ENV

from timm_lc.studies.bench.layer import SHAPES, make_step
from timm_lc.studies.bench.training import MODEL, sleep_phase, train_step
from timm_lc.studies.measure import time_steps

__all__ = ["COLUMNS", "run"]

COLUMNS = ("workload", "threads", "spin", "idle_ms", "busy_ms", "slowdown")


def _busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run(quick: bool = True, device: str = "cpu") -> List[dict]:
    """One row per workload: its best time idle and beside a busy loop, and the slowdown.

    Args:
        quick: smaller batches and fewer repeats.
        device: where the models and data go.

    Returns:
        One dict per workload with the ``COLUMNS`` keys: threads, OpenMP spin setting, idle and busy
        times in ms and their ratio.
    """
    import timm
    import timm_lc.models  # noqa: F401

    batch = 16 if quick else 64
    repeats = 2 if quick else 3
    torch.manual_seed(0)
    lc = timm.create_model(MODEL, img_size=32).to(device)
    conv = timm.create_model(MODEL, locally_connected=False, img_size=32).to(device)
    workloads = {
        f"layer {SHAPES[0].name} (batch {SHAPES[0].batch})": make_step("ours", SHAPES[0], device, torch.float32),
        f"{MODEL} train step (batch {batch})": train_step(lc, batch, device, 32),
        f"{MODEL} conv train step (batch {batch})": train_step(conv, batch, device, 32),
        f"{MODEL} hebbian sleep (100 x 128)": sleep_phase(lc),
    }
    rows = []
    for name, step in workloads.items():
        idle = time_steps({name: step}, device, repeats=repeats)[name]
        hog = _busy_loop()
        try:
            time.sleep(0.2)
            busy = time_steps({name: step}, device, repeats=repeats, warmup=0)[name]
        finally:
            hog.kill()
            hog.wait()
        rows.append({"workload": name, "threads": torch.get_num_threads(),
                     "spin": os.environ.get(SPIN_ENV, "default"), "idle_ms": round(idle * 1e3, 1),
                     "busy_ms": round(busy * 1e3, 1), "slowdown": round(busy / idle, 2)})
    return rows
