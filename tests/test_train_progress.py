"""The progress bar: on a terminal it names the running training accuracy and the test accuracy;
redirected to a file, it stays out of the log (start and epoch lines only)."""
import sys

import torch

from timm_lc_cli.train import main as train_main
from timm_lc.train import loop

ARGS = ["--max-train-samples", "64", "--max-eval-samples", "32", "--batch-size", "16", "--plots", "false",
        "--sleep-iterations", "2", "--num-workers", "0", "--max-steps", "6", "--log-every", "1"]


def test_progress_postfix_names_train_and_test_accuracy():
    assert loop._progress_postfix(1.23456, torch.tensor(3), 4, {}) == {"loss": "1.235", "train_acc": "75.0%"}
    assert loop._progress_postfix(0.5, torch.tensor(0), 0, {"test_acc": 62.5}) == {"loss": "0.500",
                                                                                  "test_acc": "62.5%"}


def test_redirected_output_holds_the_start_and_epoch_lines_only(tmp_path, capsys):
    assert not sys.stdout.isatty()  # captured, as in `timm-lc train > log 2>&1`
    assert train_main(ARGS + ["--output-dir", str(tmp_path / "run")]) == 0  # --progress defaults to true
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[0].startswith("training ") and lines[-1].startswith("final test accuracy")
    assert [line.split(" (")[0] for line in lines[1:-1]] == ["epoch 1/30", "epoch 2/30"]


def test_on_a_terminal_the_bar_names_train_and_test_accuracy(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert train_main(ARGS + ["--output-dir", str(tmp_path / "run")]) == 0
    bar = capsys.readouterr().err
    assert "train_acc=" in bar and "test_acc=" in bar and "nan" not in bar
    first_test = bar.index("test_acc=")
    assert "train_acc=" in bar[:first_test]  # from the first step on, before any evaluation
    assert " acc=" not in bar and ",acc=" not in bar
