"""Every command the README shows is either run here verbatim (those that run on a CPU offline) or
named with the test that runs its CPU / loopback equivalent: a new README command without one fails."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
TIMM_LC = str(Path(sys.executable).parent / "timm-lc")

# run verbatim, in this order, in one fresh working directory holding the repository's recipes
VERBATIM = [
    "timm-lc --version",
    "timm-lc train --config recipes/cifar10/lc.yaml --print-config",
    "timm-lc train",
    "timm-lc train --output-dir runs/demo --resume",
    "timm-lc eval runs/demo",
]
# commands that need a GPU, the network or a new venv: where their equivalent runs
EQUIVALENT = {
    "python3 -m venv .venv && . .venv/bin/activate": ".ci/run (a fresh venv)",
    "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu": ".ci/run (the torch on disk)",
    "pip install -e . && timm-lc train": ".ci/run + this test's `timm-lc train`",
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && python -m pytest -q': ".ci/run",
    "timm-lc convert resnet18 --input-size 3 64 64 --output runs/resnet18-lc --pretrained":
        "test_convert_cli.py (the same command without --pretrained, offline)",
    "timm-lc train --config recipes/cifar10/lc_instant_every10.yaml": "test_recipes.py::test_recipe_trains_two_steps (on a CIFAR-10 fixture)",
    "accelerate launch --config_file recipes/accelerate/multi_gpu.yaml --num_processes 8 "
    "-m timm_lc.train --config recipes/imagenet/lc_instant_every10.yaml":
        "test_user_paths.py::test_readme_cpu_two_process_command_is_ddp (the CPU launch)",
    "OMP_NUM_THREADS=1 accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml -m timm_lc.train":
        "test_user_paths.py::test_readme_cpu_two_process_command_is_ddp",
    "timm-lc train --report-to tensorboard": "test_user_paths.py (trackers; tensorboard is not a dependency)",
    "timm-lc push runs/cifar10-lc_hebb_every10 --repo-id your-org/lc_resnet20_hebb.c10":
        "test_hub.py::test_push_uploads_checkpoint_card_and_plots_in_one_commit (a loopback Hub)",
}


def readme_commands():
    """The README's shell commands: ```bash blocks, continuations joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [" ".join(line.split("  #")[0].split()) for line in lines if line.strip()]


def test_every_readme_command_is_run_here_or_has_a_named_equivalent():
    commands = readme_commands()
    assert sorted(commands) == sorted(VERBATIM + list(EQUIVALENT))


def test_readme_cpu_commands_run_verbatim(tmp_path):
    os.symlink(ROOT / "recipes", tmp_path / "recipes")
    env = dict(os.environ, HF_HUB_OFFLINE="1")

    def run(command):
        proc = subprocess.run([TIMM_LC] + shlex.split(command)[1:], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, f"{command}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        return proc.stdout

    version, config, demo, resume, evaluation = (run(command) for command in VERBATIM)
    assert version.startswith("timm-lc ")
    assert "sleep" in config
    assert (tmp_path / "runs/demo/model.safetensors").is_file()
    # the README's demo figure is what `timm-lc train` prints (within a point: 3 of the ~360 test digits,
    # room for another CPU's float rounding)
    quoted = re.search(r"(\d+\.\d)% test accuracy\s+after (\d+) steps", (ROOT / "README.md").read_text(encoding="utf-8"))
    printed = re.search(r"final test accuracy: (\d+\.\d+)% after (\d+) steps", demo)
    assert quoted and printed, demo[-2000:]
    assert quoted.group(2) == printed.group(2) and abs(float(quoted.group(1)) - float(printed.group(1))) <= 1.0
    assert "accuracy" in evaluation
