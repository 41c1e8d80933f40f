"""Ctrl-C whenever it arrives: before the first step, mid-step, during a checkpoint write, during a sleep.

The SIGINT is sent by the process to itself at a chosen event (``os.kill`` from inside a patched
function), so every case is deterministic: no test races the clock. Each run exits 130 with one
line naming the last complete checkpoint, and leaves no partial checkpoint behind.
"""
import os
import signal
from pathlib import Path

import accelerate
import pytest

from timm_lc_cli.train import main as train_main
from timm_lc.train import checkpoint as checkpoint_module
from timm_lc.train import loop
from timm_lc.train.interrupt import DeferredInterrupt
from timm_lc.train.sleep_phase import SleepPhase

SMALL = ["--max-train-samples", "128", "--max-eval-samples", "64", "--batch-size", "16", "--progress", "false",
         "--plots", "false", "--sleep-iterations", "2", "--num-workers", "0", "--checkpoint-every", "1",
         "--keep-checkpoints", "100", "--max-steps", "6"]


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Python's own SIGINT handler, whatever the shell that started pytest set (``&`` ignores SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def run(out: Path, capsys, *extra: str) -> str:
    assert train_main(SMALL + ["--output-dir", str(out), *extra]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was given back
    return err


def assert_stopped_at(out: Path, err: str, step: int) -> None:
    """The message names the last complete checkpoint, which is the one of ``step``, and nothing partial is left."""
    last = checkpoint_module.latest_checkpoint(out)
    assert last is not None and last.name == f"step_{step:08d}", last
    assert (last / checkpoint_module.TRAINER_STATE).is_file()
    assert f"interrupted; last checkpoint {last} (continue with --resume --output-dir {out})" in err, err
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not (out / "model.safetensors").exists()  # the run did not finish


def calls(fn, at: int, action=ctrl_c):
    """``fn`` that runs ``action`` right after its ``at``-th call (1-based)."""
    count = [0]

    def wrapped(*args, **kwargs):
        result = fn(*args, **kwargs)
        count[0] += 1
        if count[0] == at:
            action()
        return result
    return wrapped


def test_before_the_first_step(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loop, "build_train_loader", calls(loop.build_train_loader, 1))
    out = tmp_path / "run"
    err = run(out, capsys)
    assert "interrupted before the first checkpoint; nothing to resume in" in err and str(out) in err
    assert checkpoint_module.latest_checkpoint(out) is None


def test_mid_step_finishes_the_step_and_its_checkpoint(tmp_path, capsys, monkeypatch):
    create = loop.create_run_model

    def model_that_interrupts_its_third_forward(*args, **kwargs):
        model = create(*args, **kwargs)
        forwards = [0]

        def hook(module, inputs):
            forwards[0] += 1
            if forwards[0] == 3 and module.training:
                ctrl_c()
        model.register_forward_pre_hook(hook)
        return model
    monkeypatch.setattr(loop, "create_run_model", model_that_interrupts_its_third_forward)
    out = tmp_path / "run"
    assert_stopped_at(out, run(out, capsys), 3)


def test_during_a_checkpoint_write_the_checkpoint_completes(tmp_path, capsys, monkeypatch):
    # the second checkpoint: Accelerate's files are written, trainer_state.json and the rename are not yet
    monkeypatch.setattr(accelerate.Accelerator, "save_state", calls(accelerate.Accelerator.save_state, 2))
    out = tmp_path / "run"
    assert_stopped_at(out, run(out, capsys), 2)


def test_during_a_sleep_the_sleep_and_the_step_complete(tmp_path, capsys, monkeypatch):
    from timm_lc.sharing import hebbian
    monkeypatch.setattr(hebbian, "draw_noise", calls(hebbian.draw_noise, 1))  # inside the first sleep's iterations
    sleeps = []
    monkeypatch.setattr(SleepPhase, "sleep", calls(SleepPhase.sleep, 1, lambda: sleeps.append(1)))
    out = tmp_path / "run"
    assert_stopped_at(out, run(out, capsys, "--sleep-every", "2"), 2)
    assert sleeps == [1]


def test_a_second_ctrl_c_stops_at_once(tmp_path, capsys, monkeypatch):
    def twice():
        ctrl_c()
        ctrl_c()
    # inside the fourth checkpoint's write: it is abandoned, the third is the last complete one
    monkeypatch.setattr(accelerate.Accelerator, "save_state", calls(accelerate.Accelerator.save_state, 4, twice))
    out = tmp_path / "run"
    err = run(out, capsys)
    last = checkpoint_module.latest_checkpoint(out)
    assert last.name == "step_00000003" and f"last checkpoint {last} " in err


def test_an_error_after_ctrl_c_is_reported_as_the_interrupt(tmp_path, capsys, monkeypatch):
    """Data loader workers get the terminal's SIGINT too and die: the main process's error is that Ctrl-C."""
    def worker_died():
        ctrl_c()
        raise RuntimeError("DataLoader worker (pid 1) exited unexpectedly")
    monkeypatch.setattr(SleepPhase, "step", calls(SleepPhase.step, 2, worker_died))
    out = tmp_path / "run"
    assert_stopped_at(out, run(out, capsys), 1)


def test_deferred_interrupt_holds_the_first_sigint_and_raises_the_second():
    with DeferredInterrupt() as interrupts:
        ctrl_c()
        assert interrupts.requested  # held, not raised
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
        with pytest.raises(KeyboardInterrupt):
            ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_sigint_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with DeferredInterrupt() as interrupts:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        ctrl_c()
        interrupts.check()
    assert not interrupts.requested and signal.getsignal(signal.SIGINT) is signal.SIG_IGN

