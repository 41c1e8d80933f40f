"""Atomic writes: an error mid-write keeps the previous file and leaves no temporary behind."""
import pytest

from timm_lc._io import atomic_path, write_text_atomic


def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "metrics.jsonl"
    write_text_atomic(target, "old\n")
    write_text_atomic(target, "new\n")
    assert target.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_atomic_write_failure_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "plot.png"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".png" and tmp.parent == tmp_path  # writers infer the format
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]
