"""Bench section ``ddp_sleep``: wall time of one sleep phase in 1 and in 2 CPU processes.

Under DDP :class:`~timm_lc.train.SleepPhase` splits the layers across the processes (each
sleeps its share, then broadcasts it). Both runs use every core: 1 process with all threads,
or 2 processes (``accelerate launch``, gloo) with half the threads each, so the ratio shows what
the split buys over one process using the same cores. The sleep is Hebbian with the paper's
settings on ``lc_resnet20`` (``quick``: 10 iterations); each process times it after a warm-up.
"""
import json
import os
import socket
import subprocess
import sys
from typing import List

import torch

__all__ = ["COLUMNS", "run"]

COLUMNS = ("model", "processes", "threads_per_process", "iterations", "sleep_s", "vs_one_process")
MODEL = "lc_resnet20"


def _worker(iterations: int) -> None:
    """One process of the measurement (run by ``run`` through ``accelerate launch`` or directly)."""
    import timm
    from accelerate import Accelerator

    import timm_lc.models  # noqa: F401
    from timm_lc.studies.measure import time_steps
    from timm_lc.train import SleepPhase

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = accelerator.prepare(timm.create_model(MODEL, img_size=32))
    SleepPhase(iterations=2, batch_size=128).sleep(accelerator, model)  # warm-up
    sleep = SleepPhase(iterations=iterations, batch_size=128)
    accelerator.wait_for_everyone()

    def step() -> None:  # until every process has its weights back
        sleep.sleep(accelerator, model)
        accelerator.wait_for_everyone()

    seconds = time_steps({"sleep": step}, "cpu", warmup=0)["sleep"]
    if accelerator.is_main_process:
        print(json.dumps({"sleep_s": seconds}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _measure(processes: int, threads: int, iterations: int) -> float:
    code = f"from timm_lc.studies.bench.ddp_sleep import _worker; _worker({iterations})"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), ACCELERATE_USE_CPU="1")
    if processes == 1:
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", __name__, str(iterations)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["sleep_s"]


def run(quick: bool = True, device: str = "cpu") -> List[dict]:
    """Times one sleep of ``MODEL`` in 1 process with every thread and in 2 with half each.

    Args:
        quick: sleep 10 iterations instead of 100.
        device: only 'cpu' is measured; any other device gives no rows.

    Returns:
        One dict per process count with the ``COLUMNS`` keys (``vs_one_process``: its sleep time over the
        single process's), or an empty list off the CPU.

    Raises:
        subprocess.CalledProcessError: if a measurement subprocess fails.
    """
    if device != "cpu":
        return []  # one GPU per process: measured by the doctor on a multi-GPU machine, not here
    iterations = 10 if quick else 100
    cores = max(torch.get_num_threads(), 2)
    one = _measure(1, cores, iterations)
    two = _measure(2, cores // 2, iterations)
    return [{"model": MODEL, "processes": n, "threads_per_process": t, "iterations": iterations,
             "sleep_s": round(s, 2), "vs_one_process": round(s / one, 2)}
            for n, t, s in ((1, cores, one), (2, cores // 2, two))]


if __name__ == "__main__":
    _worker(int(sys.argv[1]))
