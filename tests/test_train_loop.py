"""The training loop end to end on the embedded demo: run directory, refusal to overwrite, exact
resume after SIGKILL, and ``timm-lc eval`` on the result."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file

from timm_lc.train import train
from timm_lc_cli.eval import main as eval_main
from timm_lc_cli.train import main as train_main
from timm_lc_cli.train import parse_config
from timm_lc.train.loop import RunExistsError

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--max-train-samples", "128", "--max-eval-samples", "64", "--batch-size", "16", "--progress", "false"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    cfg = parse_config(SMALL + ["--output-dir", str(out), "--max-steps", "6", "--sleep-every", "3",
                                "--sleep-iterations", "4", "--eval-every", "3", "--checkpoint-every", "2"])
    return out, train(cfg)


def test_run_directory(demo_run):
    out, final = demo_run
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "metrics.jsonl", "recipe.yaml",
                                                "checkpoints", "plots"}
    assert {p.name for p in (out / "plots").iterdir()} == {"accuracy.png", "snr.png", "sharing_loss.png"}
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000004", "step_00000006"]  # last 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "sleep"] == [3, 6]
    assert [r["step"] for r in records if r["event"] == "eval"] == [3, 6]
    sleeps = [r for r in records if r["event"] == "sleep"]
    assert all(r["deviation_after"] < r["deviation_before"] and r["wall_time"] > 0 for r in sleeps)
    assert all(r["loss_before"] > 0 and r["loss_after"] > 0 for r in sleeps)  # the sawtooth, around each share
    evals = [r for r in records if r["event"] == "eval"]
    assert [e["snr"] for e in evals] == [s["snr_before"] for s in sleeps]  # SNR at a fixed phase: before a share
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "lc_resnet_tiny_hebb" and config["dataset"] == "demo"
    sleep = config["pretrained_cfg"]["sleep"]  # the one place of the run's sleep settings
    assert "sleep" not in config and sleep["every"] == 3 and sleep["iterations"] == 4 and sleep["mode"] == "hebbian"
    assert config["recipe"]["max_steps"] == 6 and config["metrics"]["test_acc"] == final["test_acc"]
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())  # the sleep in effect, not null
    assert recipe["sleep"] is True and recipe["sleep_every"] == 3 and recipe["sleep_iterations"] == 4
    assert recipe["sleep_mode"] == "hebbian" and recipe["sleep_pools"] == "paper" and recipe["sleep_batch_size"] == 128
    assert config["model_args"]["in_chans"] == 1 and final["step"] == 6


def test_local_dir_model_equals_trained_weights(demo_run):
    out, _ = demo_run
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    saved = load_file(out / "model.safetensors")
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert model.sleep_cfg is not None and model.pretrained_cfg["mean"] == pytest.approx([0.3053])


def test_reloaded_run_sleeps_as_trained(demo_run):
    """The run's non-default sleep settings (every 3, 4 iterations) come back, not the architecture's."""
    from timm_lc.train import SleepPhase
    out, _ = demo_run
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    expected = dict(every=3, mode="hebbian", pools="paper", iterations=4, batch_size=128, gamma=1e-5, lr=None,
                    pool_optimizer_state=False)
    assert model.sleep_cfg == model.pretrained_cfg["sleep"] == expected
    sleep = SleepPhase.from_model(model)
    assert {k: getattr(sleep, k) for k in expected} == expected


def test_eval_command_reproduces_final_accuracy(demo_run, capsys):
    out, final = demo_run
    assert eval_main([str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["count"] == 64 and result["accuracy"] == pytest.approx(final["test_acc"])
    assert eval_main([str(out / "nope")]) == 2


def test_eval_of_a_corrupt_run_names_the_file(demo_run, tmp_path, capsys):
    out, _ = demo_run
    broken = tmp_path / "broken"
    shutil.copytree(out, broken, ignore=shutil.ignore_patterns("checkpoints"))
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a truncated download
    assert eval_main([str(broken)]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors" in err and "truncated" in err and str(broken) in err


def test_existing_run_is_never_overwritten_silently(demo_run, capsys):
    out, _ = demo_run
    with pytest.raises(RunExistsError, match="--resume.*--overwrite"):
        train(parse_config(SMALL + ["--output-dir", str(out), "--max-steps", "1"]))
    assert train_main(SMALL + ["--output-dir", str(out), "--max-steps", "1"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "model.safetensors").is_file()


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        train(parse_config(SMALL + ["--output-dir", str(tmp_path / "new"), "--resume"]))


def test_overwrite_replaces_a_run(tmp_path):
    out = tmp_path / "run"
    args = SMALL + ["--output-dir", str(out), "--max-steps", "1", "--sleep", "false", "--plots", "false"]
    train(parse_config(args))
    (out / "checkpoints" / "step_00000099").mkdir()  # a stale checkpoint must not survive
    final = train(parse_config(args + ["--overwrite"]))
    assert final["step"] == 1 and [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000001"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    # 8 batches per epoch, 20 steps: the run crosses epoch boundaries; dropout makes the RNG state matter
    args = SMALL + ["--max-steps", "20", "--checkpoint-every", "5", "--keep-checkpoints", "10", "--eval-every", "10",
                    "--sleep-every", "3", "--sleep-iterations", "4", "--model-kwargs", "{drop_rate: 0.3}",
                    "--sleep-pool-optimizer-state", "true",
                    "--plots", "false"]
    cmd = [sys.executable, "-m", "timm_lc.train"] + args
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(cmd + ["--output-dir", str(full)], env=_env(), check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(cmd + ["--output-dir", str(killed)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = killed / "checkpoints" / "step_00000005" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode == 0:  # finished before the kill landed: cut the run back to its first checkpoint
        for ckpt in (killed / "checkpoints").iterdir():
            if ckpt.name != "step_00000005":
                shutil.rmtree(ckpt)
        (killed / "model.safetensors").unlink()
    else:
        assert proc.returncode == -signal.SIGKILL
    assert first.is_file()
    resumed = subprocess.run(cmd + ["--output-dir", str(killed), "--resume"], env=_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout

    a, b = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    evals = [[r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if r["event"] == "eval"]
             for d in (full, killed)]
    assert [(r["step"], r["test_acc"]) for r in evals[0]] == [(r["step"], r["test_acc"]) for r in evals[1]]


def test_accumulation_ema_channels_last_and_translation_baseline(tmp_path):
    out = tmp_path / "run"
    final = train(parse_config(SMALL + ["--output-dir", str(out), "--max-steps", "5", "--grad-accum-steps", "2",
                                        "--ema", "--channels-last", "--repeats", "2", "--sleep-every", "2",
                                        "--sleep-iterations", "2", "--plots", "false"]))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # 128 images / 16 = 8 batches = 4 optimiser steps per epoch: step 5 is in the second epoch
    assert final["step"] == 5 and final["epoch"] == 1 and "ema_test_acc" in final
    assert [r["step"] for r in records if r["event"] == "sleep"] == [2, 4]
    assert all(r["images_per_s"] > 0 for r in records if r["event"] == "train")


def test_compiled_model_trains_sleeps_and_saves(tmp_path, monkeypatch):
    """--compile wraps the model in torch.compile; the sleep and the saved run see the plain model.

    The eager backend keeps the test fast: what is checked is the loop's wiring, not Inductor.
    """
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compile_(model, backend="eager"))
    out = tmp_path / "compiled"
    cfg = parse_config(SMALL + ["--compile", "true", "--max-steps", "10", "--sleep-every", "5",
                                "--sleep-iterations", "2", "--output-dir", str(out), "--plots", "false"])
    final = train(cfg)
    assert final["num_sleeps"] == 2
    state = load_file(out / "model.safetensors")
    assert not any(k.startswith("_orig_mod") for k in state)
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    torch.testing.assert_close(model.state_dict()["fc.weight"], state["fc.weight"])
