"""Two CPU processes (gloo) through ``accelerate launch``: bitwise identical weights after sleeps,
and the training loop end to end under DDP."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args, tmp_path, timeout=420):
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "recipes/accelerate/cpu_2proc.yaml"), "--main_process_port", str(_free_port())] + args
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_two_processes_identical_after_sleeps(tmp_path):
    _launch([str(ROOT / "tests/fixtures/ddp_sleep_worker.py"), str(tmp_path)], tmp_path)
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    assert any(k.startswith("optimizer.") and k.endswith(".exp_avg_sq") for k in rank0)
    different = [k for k in rank0 if not rank0[k].equal(rank1[k])]  # parameters, BatchNorm buffers, optimiser
    assert not different


def test_training_loop_under_two_processes(tmp_path):
    out = tmp_path / "run"
    _launch(["-m", "timm_lc.train", "--output-dir", str(out), "--max-steps", "4", "--max-train-samples", "128",
             "--max-eval-samples", "64", "--batch-size", "16", "--sleep-every", "2", "--sleep-iterations", "3",
             "--checkpoint-every", "2", "--progress", "false", "--plots", "false"], tmp_path)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    start = next(r for r in records if r["event"] == "start")
    assert start["num_processes"] == 2
    assert [r["step"] for r in records if r["event"] == "sleep"] == [2, 4]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
    assert {f"random_states_{i}.pkl" for i in range(2)} <= {p.name for p in (out / "checkpoints/step_00000004").iterdir()}
    final = json.loads((out / "config.json").read_text())["metrics"]
    assert final["step"] == 4 and 0 <= final["test_acc"] <= 100
