"""What a new user runs, end to end on the demo and tiny fixtures (issue #13): the README's 2-process
CPU launch, retries after a failed start, image size and memory checks, one-line errors, Ctrl-C,
start and epoch lines, trackers, the precision rule, ``--print-config`` and the console script."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from accelerate.tracking import GeneralTracker
from PIL import Image

from timm_lc.train import loop
from timm_lc.train import resolve as config_module
from timm_lc.train.data import build_data
from timm_lc.train.resolve import cpu_has_amx_bf16, resolve_config, trackers_for
from timm_lc_cli import main as cli_main
from timm_lc_cli.eval import main as eval_main
from timm_lc_cli.train import main as train_main
from timm_lc_cli.train import parse_config
from timm_lc_settings.train import valid_keys

from fixtures.train_data import make_dataset

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--max-train-samples", "128", "--max-eval-samples", "64", "--batch-size", "16", "--progress", "false",
         "--plots", "false", "--sleep-iterations", "2"]


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               **extra)
    env.pop("ACCELERATE_USE_CPU", None)
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    return env


def _records(run: Path):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _snapshot(path: Path):
    return sorted((str(p.relative_to(path)), p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
                  for p in path.rglob("*")) if path.exists() else None


def test_readme_cpu_two_process_command_is_ddp(tmp_path):
    out = tmp_path / "run"
    accelerate = str(Path(sys.executable).parent / "accelerate")
    # the README's command, verbatim, plus a few small-run flags (no ACCELERATE_USE_CPU in the environment)
    cmd = [accelerate, "launch", "--config_file", str(ROOT / "recipes/accelerate/cpu_2proc.yaml"), "-m",
           "timm_lc.train", "--output-dir", str(out), "--max-steps", "2", "--sleep-every", "2"] + SMALL
    proc = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    records = _records(out)
    assert records and all(r["num_processes"] == 2 for r in records)
    assert proc.stdout.count("training lc_resnet_tiny_hebb") == 1 and "2 processes on cpu" in proc.stdout


@pytest.fixture(scope="module")
def cifar_fixture(tmp_path_factory):
    return make_dataset("cifar10", tmp_path_factory.mktemp("data"), num_train=16, num_eval=8)


def test_failed_starts_leave_the_output_directory_as_it_was(tmp_path, cifar_fixture, monkeypatch, capsys):
    fresh = tmp_path / "fresh"
    assert train_main(SMALL + ["--output-dir", str(fresh), "--model", "lc_resnet_nope"]) == 2
    assert train_main(SMALL + ["--output-dir", str(fresh), "--dataset-path", str(tmp_path / "missing"),
                               "--dataset", "cifar10"]) == 2
    assert not fresh.exists()
    run = tmp_path / "run"
    assert train_main(SMALL + ["--output-dir", str(run), "--max-steps", "1"]) == 0  # retry-free start
    before = _snapshot(run)
    cifar = ["--dataset", "cifar10", "--dataset-path", str(cifar_fixture), "--model", "lc_resnet20",
             "--batch-size", "4", "--img-size", "8"]
    failures = {
        "model": ["--overwrite", "--model", "lc_resnet_nope"],
        "data": ["--overwrite", "--dataset", "cifar10", "--dataset-path", str(tmp_path / "missing")],
        "column": ["--overwrite"] + cifar + ["--image-column", "pixels"],
        "config": ["--overwrite", "--sched", "sometimes"],
        "checkpoint": ["--resume", "--num-classes", "5"],
        "memory": ["--overwrite"] + cifar,
    }
    capsys.readouterr()
    for what, args in failures.items():
        if what == "memory":
            monkeypatch.setattr("psutil.virtual_memory", lambda: type("vm", (), {"available": 1 << 16})())
        assert train_main(SMALL + ["--output-dir", str(run), "--max-steps", "2"] + args) == 2, what
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("timm-lc train: error:"), (what, err)
        assert _snapshot(run) == before, what
    monkeypatch.undo()
    assert train_main(SMALL + ["--output-dir", str(fresh), "--max-steps", "1"]) == 0  # no --overwrite needed


def test_memory_check_names_the_sizes(cifar_fixture, monkeypatch):
    monkeypatch.setattr("psutil.virtual_memory", lambda: type("vm", (), {"available": 1 << 30})())
    cfg = resolve_config(parse_config(["--config", str(ROOT / "recipes/cifar10/lc.yaml"), "--img-size", "224"]))
    with pytest.raises(ValueError, match=r"lc_resnet20 at 224x224 has 2\.\d+ B weights.*GiB of RAM is free.*--img-size"):
        loop.check_memory(cfg, 10, 3, 224, loop.torch.device("cpu"))


def _image_folder(root: Path) -> Path:
    for split, count in (("train", 4), ("test", 2)):
        for label in ("cat", "dog"):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40, 40), (40 * i, 80, 120)).save(root / split / label / f"{i}.png")
    return root


def test_image_size_follows_the_model_whatever_the_data_set(tmp_path):
    folder = _image_folder(tmp_path / "pets")
    args = ["--config", str(ROOT / "recipes/cifar10/lc.yaml"), "--dataset", str(folder),
            "--data-dir", str(tmp_path / "cache"), "--num-workers", "0"]
    cfg = resolve_config(parse_config(args))
    assert cfg.img_size == 32  # lc_resnet20's input_size, not 224
    data = build_data(cfg)
    assert data.train[(0, 0, 0)][0].shape == (3, 32, 32) and data.num_classes == 2
    assert resolve_config(parse_config(args + ["--img-size", "24"])).img_size == 24
    assert resolve_config(parse_config(["--model", "lc_resnet18_half", "--dataset", "cifar10"])).img_size == 224
    assert resolve_config(parse_config([])).img_size is None  # the demo: its canvas


def test_malformed_yaml_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model: lc_resnet_tiny\nepochs: [1, 2\n")
    assert train_main(["--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid YAML" in err and "line 3" in err and str(recipe) in err


# ``python -m timm_lc.train`` whose first checkpoint write, once Accelerate's files are on disk, says it is
# ready and waits until a real SIGINT from the parent has reached the run's own handler
_WAIT_FOR_SIGINT = """
import runpy, signal, sys, time
from pathlib import Path
import accelerate
signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the shell that started pytest set
save_state, ready = accelerate.Accelerator.save_state, Path(sys.argv.pop(1))

def save_then_wait(self, *args, **kwargs):
    result = save_state(self, *args, **kwargs)
    if not ready.exists():
        handler, received = signal.getsignal(signal.SIGINT), []

        def relay(signum, frame):
            received.append(signum)
            handler(signum, frame)
        signal.signal(signal.SIGINT, relay)
        ready.write_text("ready")
        deadline = time.monotonic() + 300
        while not received:
            if time.monotonic() > deadline:
                sys.exit("no SIGINT came")
            time.sleep(0.01)
        signal.signal(signal.SIGINT, handler)
    return result

accelerate.Accelerator.save_state = save_then_wait
sys.argv[0] = "timm_lc.train"
runpy.run_module("timm_lc.train", run_name="__main__", alter_sys=True)
"""


def test_ctrl_c_stops_cleanly_and_names_the_last_checkpoint(tmp_path):
    out, ready = tmp_path / "run", tmp_path / "ready"
    args = ["--output-dir", str(out), "--max-steps", "3", "--checkpoint-every", "1", "--keep-checkpoints", "100"] + SMALL
    proc = subprocess.Popen([sys.executable, "-c", _WAIT_FOR_SIGINT, str(ready)] + args, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not ready.exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # the child is inside its first checkpoint write, waiting for it
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    last = stderr.split("last checkpoint ")[1].split(" ")[0]
    assert Path(last) == out / "checkpoints" / "step_00000001" and (Path(last) / "trainer_state.json").is_file()
    resumed = subprocess.run([sys.executable, "-m", "timm_lc.train"] + args + ["--resume"], env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout, resumed.stderr[-2000:]
    assert _records(out)[-1]["step"] == 3


def test_eval_of_a_model_that_does_not_fit_the_data_is_one_line(capsys):
    assert eval_main(["lc_resnet_tiny_hebb", "--dataset", "demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "takes 3x16x16 images" in err and "gives 1x16x16" in err


def test_start_and_epoch_lines_without_progress_bar(tmp_path, capsys):
    assert train_main(SMALL + ["--output-dir", str(tmp_path / "run"), "--max-steps", "10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines[0]
    assert str(tmp_path / "run") in start and "lc_resnet_tiny_hebb (772,762 weights)" in start
    assert "demo (128 train / 64 eval images" in start and "1 process on cpu" in start and "precision no" in start
    assert start.endswith(", 10 steps") and lines[-1].startswith("final test accuracy") and " after 10 steps;" in lines[-1]
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [e.split(" (")[0] for e in epochs] == ["epoch 1/30", "epoch 2/30"]  # 8 steps, then a partial 2
    assert all(k in epochs[0] for k in ("loss ", "test acc ", "SNR ", "img/s"))


def test_one_step_is_singular(tmp_path, capsys):
    assert train_main(SMALL + ["--output-dir", str(tmp_path / "run"), "--max-steps", "1", "--sleep", "false"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(", 1 step") and " after 1 step;" in lines[-1]


class _Recorder(GeneralTracker):
    name = "recorder"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.config, self.logs, self.finished = None, [], False

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None, **kwargs):
        self.logs.append((step, values))

    def finish(self):
        self.finished = True


def test_report_to_names_accelerate_trackers(tmp_path, monkeypatch):
    assert trackers_for("none") is None and trackers_for("all") == "all"
    with pytest.raises(ValueError, match="unknown tracker 'tensorbored'.*tensorboard"):
        trackers_for("tensorbored")
    recorder = _Recorder()
    monkeypatch.setattr(loop, "trackers_for", lambda report_to: [recorder])
    loop.train(parse_config(SMALL + ["--output-dir", str(tmp_path / "run"), "--max-steps", "2", "--eval-every", "1",
                                     "--log-every", "1"]))
    assert recorder.config["model"] == "lc_resnet_tiny_hebb" and recorder.finished
    assert [step for step, values in recorder.logs if "eval/test_acc" in values] == [1, 2]
    assert any("train/loss" in values for _, values in recorder.logs)


def test_uninstalled_tracker_fails_before_the_start(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("accelerate.tracking.get_available_trackers", lambda: [])
    assert train_main(["--output-dir", str(tmp_path / "run"), "--report-to", "tensorboard"]) == 2
    assert "pip install tensorboard" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_mixed_precision_rule(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    amx, avx2 = tmp_path / "amx", tmp_path / "avx2"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile\n")
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert cpu_has_amx_bf16(amx) and not cpu_has_amx_bf16(avx2) and not cpu_has_amx_bf16(tmp_path / "none")
    monkeypatch.setattr(config_module, "cpu_has_amx_bf16", lambda: True)
    assert resolve_config(parse_config([])).mixed_precision == "bf16"
    assert resolve_config(parse_config(["--mixed-precision", "no"])).mixed_precision == "no"
    monkeypatch.setattr(config_module, "cpu_has_amx_bf16", lambda: False)
    assert resolve_config(parse_config([])).mixed_precision == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # `accelerate launch --mixed_precision bf16`
    assert resolve_config(parse_config([])).mixed_precision == "bf16"
    assert resolve_config(parse_config(["--config", str(ROOT / "recipes/cifar10/lc.yaml")])).mixed_precision == "fp16"


def test_print_config_prints_every_resolved_key_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_main(["--config", str(ROOT / "recipes/cifar10/lc.yaml"), "--lr", "0.02", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert list(printed) == valid_keys() and printed["lr"] == 0.02 and printed["img_size"] == 32
    assert printed["name"] == "cifar10-lc" and list(tmp_path.iterdir()) == []


def test_train_help_lists_each_option_once_with_a_description(capsys):
    with pytest.raises(SystemExit) as exit_:
        train_main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--max_steps" not in text and text.count("--max-steps N") == 1
    assert "--mixed-precision {no,fp16,bf16}" in text and "amx_bf16" in text
    assert "--report-to" in text and "--print-config" in text
    for key in valid_keys():
        option = text.split(f"--{key.replace('_', '-')} ", 1)[1]
        assert option.split("(default:")[0].strip(), key


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["eval", "--help"], ["convert", "--help"],
                                  ["push", "--help"], ["bench", "--help"], ["replicate", "--help"],
                                  ["sleep-convergence", "--help"], ["doctor", "--help"], ["train", "--no-such-flag"],
                                  ["train", "--epoch", "3"], ["eval", "--batch", "8", "x"]])
def test_console_script_help_and_usage_errors_do_not_import_torch(args):
    """The console script's entry point answers --help and usage errors before torch / timm load."""
    code = ("import sys, timm_lc_cli; sys.argv = ['timm-lc'] + sys.argv[1:]\n"
            "try:\n    code = timm_lc_cli.main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('heavy:', sorted(m for m in ('torch', 'timm', 'accelerate') if m in sys.modules))\n"
            "sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == (0 if "--help" in args else 2), result.stderr
    assert "heavy: []" in result.stdout
    assert ("usage: timm-lc" in result.stdout + result.stderr)
    if args == ["train", "--epoch", "3"]:  # no argparse prefix matching
        assert "unknown option(s) --epoch (did you mean --epochs?)" in result.stderr


@pytest.mark.parametrize("args, expected", [
    (["--epochs", "-1"], "config key 'epochs': expected a positive number, got -1"),
    (["--config", "no/such/recipe.yaml"], "recipe 'no/such/recipe.yaml' does not exist"),
    (["--sleep-mode", "dream"], "config key 'sleep_mode': expected one of instant, hebbian, rate, got 'dream'"),
    (["--sleep-mode", "rate", "--sleep-every", "0"], "config key 'sleep_every'"),
])
def test_value_errors_answer_before_torch_loads(args, expected):
    """A bad value or a missing recipe is one line and exit 2, checked before the library (torch) loads."""
    code = ("import sys, timm_lc_cli\ncode = timm_lc_cli.main(['train'] + sys.argv[1:])\n"
            "print('heavy:', sorted(m for m in ('torch', 'timm', 'accelerate', 'timm_lc') if m in sys.modules))\n"
            "sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2 and "heavy: []" in result.stdout
    assert result.stderr.startswith("timm-lc train: error: ") and result.stderr.count("\n") == 1
    assert expected in result.stderr


@pytest.mark.parametrize("recipe, expected", [
    ("recipes/cifar10/lc_hebb_every10.yaml", dict(sleep=True, sleep_every=10, sleep_mode="hebbian",
                                                  sleep_pools="paper", sleep_iterations=100, sleep_batch_size=128,
                                                  sleep_gamma=1e-5, sleep_lr=None)),
    ("recipes/cifar10/lc.yaml", dict(sleep=False)),
])
def test_print_config_shows_the_sleep_in_effect(recipe, expected, capsys):
    """The sleep keys come from the model's settings (MODEL_SLEEP: the table the models' cfgs are built from)."""
    from timm_lc_settings.sleep import MODEL_SLEEP
    assert train_main(["--config", str(ROOT / recipe), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert {k: printed[k] for k in expected} == expected
    if printed["sleep"]:
        settings = MODEL_SLEEP[printed["model"]].to_dict()
        assert all(printed[f"sleep_{k}"] == v for k, v in settings.items() if f"sleep_{k}" in printed)
    assert train_main(["--config", str(ROOT / recipe), "--print-config", "--sleep-every", "3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["sleep"] == expected["sleep"] and printed["sleep_every"] == 3


@pytest.mark.parametrize("preset", [None, "7"])
def test_console_script_sets_the_openmp_spin_count_before_torch_loads(preset):
    """GOMP_SPINCOUNT is read once, when torch loads libgomp: the entry point sets it first, keeping a user's value."""
    code = ("import os, sys, timm_lc_cli; sys.argv = ['timm-lc', 'train', '--print-config']\n"
            "torch_first = 'torch' in sys.modules\ntimm_lc_cli.main()\n"
            "print('spin:', os.environ.get('GOMP_SPINCOUNT'), torch_first, 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if preset is not None:
        env["GOMP_SPINCOUNT"] = preset
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"spin: {preset or '1000'} False True" in result.stdout


def test_console_script_loads_the_api_before_a_command_runs(tmp_path):
    code = ("import sys, timm_lc_cli; sys.argv = ['timm-lc', 'train', '--print-config']\n"
            "timm_lc_cli.main()\nimport timm, timm_lc\n"
            "print('registered:', 'lc_resnet_tiny_hebb' in timm.list_models('lc_resnet*'), timm_lc.SleepPhase.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "registered: True SleepPhase" in result.stdout
    assert "_TIMM_LC_DEFER_API" not in os.environ


def test_console_script_version_and_bare_usage(capsys):
    from importlib.metadata import version
    assert cli_main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"timm-lc {version('timm-lc')}"
    assert cli_main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: timm-lc")
