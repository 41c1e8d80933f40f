"""``timm-lc convert`` writes a run directory that timm, ``timm-lc eval`` and ``timm-lc push`` read,
never overwrites one silently, and fails in one line (no traceback, no retries) on a bad name or
unreachable weights."""
import copy
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch

from timm_lc.convert import convert_to_lc_, lc_to_conv_
from timm_lc_cli.convert import main
from timm_lc.hub import manifest_entry
from timm_lc.train.evaluate import load_model_for_eval

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["test_resnet", "--input-size", "3", "32", "32", "--keep-first", "1", "--num-classes", "5", "--noise", "0.1"]


def test_converted_directory_loads_with_timm_eval_and_push(tmp_path, capsys):
    out = tmp_path / "lc"
    torch.manual_seed(0)  # the conv model's init, so that the test can rebuild what the CLI converted
    assert main(ARGS + ["--output", str(out)]) == 0
    torch.manual_seed(0)
    reference = timm.create_model("test_resnet", num_classes=5)
    convert_to_lc_(reference, (3, 32, 32), keep_first=1, noise=0.1, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)  # a different init: only the saved weights may decide the loaded model's outputs
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x))
    assert model.pretrained_cfg["input_size"] == (3, 32, 32) and model.pretrained_cfg["fixed_input_size"]
    evaluated, config = load_model_for_eval(str(out))  # what `timm-lc eval DIR` loads
    assert config["lc_conversion"]["noise"] == 0.1 and sum(p.numel() for p in evaluated.parameters()) == \
        config["lc_conversion"]["report"]["params_after"]
    assert manifest_entry(out, "org/test_resnet-lc")["num_params"] == config["lc_conversion"]["report"]["params_after"]


def test_random_weights_are_said_and_recorded(tmp_path, capsys):
    """Without --pretrained the weights are the conv model's random init: the output says so, config.json
    records it, and ``base`` names the bare architecture, not a pretrained tag."""
    out = tmp_path / "lc"
    assert main(ARGS + ["--output", str(out)]) == 0
    assert "the weights are random" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["lc_conversion"]["pretrained"] is False
    assert config["model_args"]["base"] == "test_resnet" and "tag" not in config["pretrained_cfg"]


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "lc"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(ARGS + ["--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err and sorted(os.listdir(out)) == ["notes.txt"]
    assert main(ARGS + ["--output", str(out), "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "notes.txt"]


def test_unknown_model_is_one_line_with_suggestions(tmp_path, capsys):
    assert main(["resnt18", "--input-size", "3", "32", "32", "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean resnet18" in err and not (tmp_path / "x").exists()


def _convert_pretrained(tmp_path, **env):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"),
               PYTHONPATH=str(ROOT), **env)
    env.pop("HF_HUB_CACHE", None)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "timm_lc_cli", "convert", "resnet18", "--pretrained", "--input-size",
                           "3", "32", "32", "--output", str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          timeout=120)
    return proc, time.monotonic() - start


def test_pretrained_offline_or_unreachable_fails_fast_in_one_line(tmp_path):
    proc, _ = _convert_pretrained(tmp_path, HF_HUB_OFFLINE="1")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "HF_HUB_OFFLINE=1" in proc.stderr
    with socket.socket() as s:  # a local port nothing listens on
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    proc, seconds = _convert_pretrained(tmp_path, HF_HUB_OFFLINE="0", HF_ENDPOINT=endpoint)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "cannot be reached" in proc.stderr
    assert seconds < 45 and not (tmp_path / "out").exists()  # one connection attempt, no retry loop


def test_in_place_names_and_stale_report():
    model = timm.create_model("test_resnet")
    original = copy.deepcopy(model)
    assert convert_to_lc_(model, (3, 32, 32)) is model and hasattr(model, "lc_conversion_report")
    assert lc_to_conv_(model) is model and not hasattr(model, "lc_conversion_report")
    assert {n for n, _ in model.named_modules()} == {n for n, _ in original.named_modules()}
    from timm_lc import convert
    assert convert.convert_to_lc is convert_to_lc_ and convert.lc_to_conv is lc_to_conv_
