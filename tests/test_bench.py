"""timm-lc bench plumbing on tiny shapes (the measurements themselves are not asserted: noisy)."""
import pytest
import torch

from timm_lc.studies.bench import format_table, replace_section
from timm_lc.studies.bench.layer import LayerShape, ReferenceLC, make_step, peak_memory_in_subprocess
from timm_lc.studies.measure import time_steps
from timm_lc.layers import LocallyConnected2d


def test_reference_formulation_is_an_lc_layer():
    shape = LayerShape("tiny", 2, 3, 6)
    ref = ReferenceLC(shape, dtype=torch.float64)
    lc = LocallyConnected2d(3, 3, 3, 6, padding=1, bias=False, dtype=torch.float64)
    with torch.no_grad():  # reference weight (C_in, C_out, H, W, kh, kw) -> ours (H, W, C_out, kh, kw, C_in)
        lc.weight.copy_(ref.weight.permute(2, 3, 1, 4, 5, 0))
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(ref(x), lc(x))


def test_every_implementation_runs_and_is_timed():
    shape = LayerShape("tiny", 2, 4, 8)
    steps = {impl: make_step(impl, shape, "cpu", torch.float32) for impl in ("ours", "floor", "reference", "conv")}
    times = time_steps(steps, repeats=1, device="cpu")
    assert set(times) == set(steps) and all(t > 0 for t in times.values())


def test_peak_memory_sees_the_reference_unfold():
    shape = LayerShape("cifar-like", 32, 16, 32)  # reference keeps a 19 MB unfolded input for backward
    # each in a fresh process, as the bench does: in this one, memory freed by earlier tests is reused
    assert 0 < peak_memory_in_subprocess("ours", shape, "cpu", torch.float32) \
        < peak_memory_in_subprocess("reference", shape, "cpu", torch.float32)


def test_format_table():
    table = format_table([{"a": 1, "b": 2.5}, {"a": 3}], ["a", "b", "missing"])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2.5 |", "| 3 |  |"]


def test_replace_section_rewrites_only_its_own_block():
    doc = "# Perf\n\nprose\n\n<!-- bench:layer -->\nold table\n<!-- /bench:layer -->\n\nafter\n"
    new = replace_section(doc, "layer", "new table")
    assert new == doc.replace("old table", "new table")
    assert replace_section(new, "busy", "busy table").endswith(
        "after\n\n## busy\n\n<!-- bench:busy -->\nbusy table\n<!-- /bench:busy -->\n")
    assert replace_section("", "busy", "t") == "## busy\n\n<!-- bench:busy -->\nt\n<!-- /bench:busy -->\n"


def test_bench_markdown_rewrites_the_tables_of_the_sections_it_ran(tmp_path, monkeypatch, capsys):
    """``timm-lc bench --markdown`` (measurements replaced by fixed rows: only the writing is tested)."""
    from timm_lc.studies.bench import busy, training
    from timm_lc_cli.bench import main

    monkeypatch.setattr(busy, "run", lambda quick, device: [{"workload": "layer", "slowdown": 1.5}])
    monkeypatch.setattr(training, "run", lambda quick, device: [{"variant": "LC", "images_per_s": 9.0}])
    doc = tmp_path / "performance.md"
    doc.write_text("# Perf\n\nKept prose.\n\n<!-- bench:busy -->\nstale\n<!-- /bench:busy -->\n\nTail.\n")
    assert main(["--sections", "busy", "training", "--quick", "--device", "cpu", "--markdown", str(doc)]) == 0
    text = doc.read_text()
    assert "stale" not in text and "Kept prose." in text and "Tail." in text
    assert "`timm-lc bench --sections busy --quick` on " in text and " CPU cores with " in text
    assert "| layer | 1.5 |" in text
    assert text.index("Tail.") < text.index("## training") < text.index("| LC | 9.0 |")
    assert "| layer | 1.5 |" in capsys.readouterr().out


def test_bench_refuses_an_output_it_could_not_write_before_measuring(tmp_path, capsys):
    from timm_lc_cli.bench import main

    for argv in (["--markdown", str(tmp_path)], ["--json", str(tmp_path / "missing" / "rows.json")]):
        with pytest.raises(SystemExit) as exit_info:
            main(["--sections", "busy"] + argv)
        assert exit_info.value.code == 2 and "expected a file in an existing directory" in capsys.readouterr().err


def test_ddp_sleep_section_times_a_real_two_process_sleep():
    from timm_lc.studies.bench.ddp_sleep import _measure
    assert 0 < _measure(2, 1, iterations=1) < 300


def test_doctor_runs_the_packaged_cuda_checks_and_names_failures(monkeypatch):
    """The doctor's ``tests`` section runs timm_lc.studies.cuda_checks in-process (no tests/ needed)."""
    from timm_lc.studies import cuda_checks, doctor

    names = [name for name, _ in cuda_checks.checks()]
    assert len(names) == len(set(names)) == 2 * len(cuda_checks.CASES) + len(cuda_checks.LOW_PRECISIONS) + 1

    def broken():
        raise AssertionError("Tensor-likes are not close!")

    ran = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda_checks, "checks", lambda: [("ok", lambda: ran.append("ok")), ("broken", broken)])
    result = doctor.run_tests(timeout_s=60)
    assert ran == ["ok"] and result["summary"] == "1 passed, 1 failed" and result["passed"] is False
    assert result["failures"] == [{"check": "broken", "error": "AssertionError: Tensor-likes are not close!"}]
    assert not doctor.section_ok("tests", result)
