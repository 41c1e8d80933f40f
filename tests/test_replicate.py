"""``timm-lc replicate``: the smoke study on the real embedded digits, its outputs, summary and publishing."""
import json
import statistics

import pytest

from timm_lc.train.replicate import (
    SHARING_VARIANTS, VARIANTS, main, ordering_checks, study_setup, summarise, variant_config)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke study (1 seed, 10 steps, every variant) with --publish into a private manifest."""
    root = tmp_path_factory.mktemp("replicate")
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"organization": "timm-lc", "checkpoints": []}))
    argv = ["--smoke", "--output", str(root / "results"), "--runs-dir", str(root / "runs"),
            "--publish", "--manifest", str(manifest)]
    assert main(argv) == 0
    return root, json.loads((root / "results" / "replication.json").read_text())


def test_smoke_writes_json_table_and_plot(smoke):
    root, results = smoke
    assert isinstance(results["dataset"], str) and "digits" in results["dataset"]
    assert results["command"].startswith("timm-lc replicate --smoke")
    runs = results["runs"]
    assert [(r["variant"], r["seed"]) for r in runs] == [(v, 0) for v in VARIANTS]
    for run in runs:
        assert 0.0 <= run["test_acc"] <= 100.0
        assert run["steps"] == 10
        assert (root / "runs" / run["variant"] / "seed0" / "model.safetensors").is_file()
        # the run's own record agrees with the study's
        config = json.loads((root / "runs" / run["variant"] / "seed0" / "config.json").read_text())
        assert config["metrics"]["test_acc"] == pytest.approx(run["test_acc"])
    sleeps = {r["variant"]: r["num_sleeps"] for r in runs}
    assert sleeps == {"conv": 0, "lc": 0, "lc_translations": 0, "lc_share_1": 10, "lc_share_10": 1,
                      "lc_share_100": 0, "lc_instant_10": 1, "lc_instant_full_1": 10}
    table = (root / "results" / "replication.md").read_text()
    for variant in VARIANTS:
        assert f"| `{variant}` | {results['summary'][variant]['mean']:.1f} ± 0.0 | 1 |" in table
    png = (root / "results" / "replication.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((root / "results").glob(".*tmp*"))


def test_smoke_publishes_cards_and_manifest_entries(smoke):
    root, results = smoke
    from timm_lc.hub import file_sha256, load_manifest
    entries = {e["model"]: e for e in load_manifest(root / "manifest.json")["checkpoints"]}
    assert set(entries) == {"lc_resnet_tiny_hebb.digits_replication", "lc_resnet_tiny.digits_replication"}
    published = {p["model"]: p for p in results["published"]}
    best_sharing = max(SHARING_VARIANTS, key=lambda v: results["summary"][v]["mean"])
    assert published["lc_resnet_tiny_hebb.digits_replication"]["variant"] == best_sharing
    assert published["lc_resnet_tiny.digits_replication"]["variant"] == "lc"
    for model, entry in entries.items():
        run_dir = root / "runs" / published[model]["variant"] / "seed0"
        assert entry["repo_id"] == f"timm-lc/{model}"
        assert entry["sha256"] == file_sha256(run_dir / "model.safetensors")
        assert entry["input_size"] == [1, 16, 16] and entry["num_classes"] == 10
        card = (run_dir / "README.md").read_text()
        assert card == (root / "results" / "cards" / f"{model}.md").read_text()
        assert entry["sha256"] in card and "test_acc" in card


def test_variants_differ_only_in_their_own_keys(tmp_path):
    setup = study_setup(epochs=4, repeats=3)
    configs = {v: variant_config(v, 1, setup, tmp_path).to_dict() for v in VARIANTS}
    own = {"model", "model_kwargs", "sleep", "sleep_mode", "sleep_pools", "sleep_every", "repeats", "name", "output_dir"}
    base = configs["lc"]
    for variant, cfg in configs.items():
        assert {k for k in cfg if cfg[k] != base[k]} <= own, variant
        assert cfg["seed"] == 1 and cfg["epochs"] == 4
    assert configs["lc_translations"]["repeats"] == 3 and configs["lc"]["repeats"] == 1
    assert configs["conv"]["model_kwargs"] == {"locally_connected": False}
    assert [configs[v]["sleep_every"] for v in SHARING_VARIANTS] == [1, 10, 100, 10]
    assert configs["lc_instant_10"]["sleep_mode"] == "instant"


def test_summary_and_ordering_against_hand_computed_values():
    runs = [{"variant": v, "seed": s, "test_acc": a, "wall_time_s": 1.0}
            for v, accs in (("conv", (90.0, 92.0, 94.0)), ("lc_share_1", (80.0, 80.0, 80.0)),
                            ("lc", (81.0, 70.0, 59.0))) for s, a in enumerate(accs)]
    summary = summarise(runs)
    assert summary["conv"]["mean"] == 92.0 and summary["conv"]["std"] == pytest.approx(2.0)
    assert summary["lc"]["std"] == pytest.approx(statistics.stdev([81.0, 70.0, 59.0])) == pytest.approx(11.0)
    checks = {c["pair"]: c for c in ordering_checks(summary)}
    assert checks["conv >= lc_share_1"]["holds"] and not checks["conv >= lc_share_1"]["within_noise"]
    assert checks["lc_share_1 > lc"]["holds"] and checks["lc_share_1 > lc"]["within_noise"]
    assert checks["lc_share_1 > lc"]["difference"] == pytest.approx(10.0)


@pytest.mark.parametrize("argv, message", [
    (["--variants", "lc", "cnn"], "unknown variant(s) cnn"),
    (["--seeds", "0"], "--seeds: expected a positive integer"),
    (["--translate", "4", "--test-shift", "2"], "test_shift (2) smaller than translate (4)"),
])
def test_bad_options_are_reported(argv, message, capsys, tmp_path):
    assert main(argv + ["--runs-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
