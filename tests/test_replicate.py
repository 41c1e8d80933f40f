"""``timm-lc replicate``: the smoke studies on real data (embedded digits, Fashion-MNIST), outputs,
summary and publishing."""
import json
import statistics

import pytest

from timm_lc.train import fashion_mnist
from timm_lc_cli.replicate import main
from timm_lc.studies.replicate import (
    SHARING_VARIANTS, TUNE_LRS, VARIANTS, Setting, _edge_extension, gap_closed, ordering_checks, study_setup,
    summarise, tuning_grid, variant_config)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke study (1 seed, 10 steps, every variant) with --publish into a private manifest."""
    root = tmp_path_factory.mktemp("replicate")
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"organization": "timm-lc", "checkpoints": []}))
    argv = ["--smoke", "--output", str(root / "untouched"), "--runs-dir", str(root / "runs"),
            "--publish", "--manifest", str(manifest)]
    assert main(argv) == 0
    assert not (root / "untouched").exists()  # --smoke never writes over the results directory
    return root, json.loads((root / "runs" / "results" / "replication.json").read_text())


def test_smoke_writes_json_table_and_plot(smoke):
    root, results = smoke
    assert isinstance(results["dataset"], str) and "digits" in results["dataset"] and "i.i.d." in results["dataset"]
    assert results["command"].startswith("timm-lc replicate --smoke")
    assert results["train_samples"] == 256 and results["image_size"] == 16
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
    assert sleeps == {"conv": 0, "lc": 0, "lc_translations": 0, "lc_instant_1": 10, "lc_instant_10": 1,
                      "lc_instant_100": 0, "lc_hebb_10": 1}
    table = (root / "runs" / "results" / "replication.md").read_text()
    for variant in VARIANTS:
        assert f"| `{variant}` | AdamW 0.01 | {results['summary'][variant]['mean']:.1f} ± 0.0 | 1 |" in table
    assert {(r["optimizer"], r["lr"], r["pool_optimizer_state"]) for r in runs} == {("adamw", 0.01, False)}
    assert "selection" not in results and "choices" not in results
    png = (root / "runs" / "results" / "replication.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((root / "runs" / "results").glob(".*tmp*"))


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
        assert card == (root / "runs" / "results" / "cards" / f"{model}.md").read_text()
        assert entry["sha256"] in card and "test_acc" in card


@pytest.mark.parametrize("study", ["digits", "fashion-mnist"])
def test_variants_differ_only_in_their_own_keys(study, tmp_path):
    setup = study_setup(study, epochs=4, repeats=3)
    configs = {v: variant_config(v, 1, setup, tmp_path).to_dict() for v in VARIANTS}
    own = {"model", "model_kwargs", "sleep", "sleep_mode", "sleep_pools", "sleep_every", "repeats", "translate",
           "name", "output_dir"}
    base = configs["lc"]
    for variant, cfg in configs.items():
        assert {k for k in cfg if cfg[k] != base[k]} <= own, variant
        assert cfg["seed"] == 1 and cfg["epochs"] == 4 and cfg["decay_milestones"] == [2, 3]
        assert cfg["model"] == base["model"] + ("_hebb" if variant in SHARING_VARIANTS else "")
    assert configs["lc_translations"]["repeats"] == 3 and configs["lc"]["repeats"] == 1
    assert configs["conv"]["model_kwargs"] == dict(base["model_kwargs"], locally_connected=False)
    assert [configs[v]["sleep_every"] for v in SHARING_VARIANTS] == [1, 10, 100, 10]
    assert [configs[v]["sleep_mode"] for v in SHARING_VARIANTS] == ["instant"] * 3 + ["hebbian"]
    assert {configs[v]["sleep_pools"] for v in SHARING_VARIANTS} == {"residue"}
    assert base["model"] == "lc_resnet_tiny"
    if study == "fashion-mnist":  # 14x14 photographs on a 24x24 canvas, within +-4 px in training and test
        assert base["dataset"] == "fashion-mnist" and base["max_train_samples"] == 4000 and not base["hflip"]
        assert (base["object_size"], base["canvas_size"], base["img_size"]) == (14, 24, 24)
        assert base["test_shift"] == base["translate"] == 4
    else:  # i.i.d. test: test placements drawn like the training ones
        assert base["test_shift"] == base["translate"] == 2


@pytest.mark.skipif(fashion_mnist.local_dir() is None, reason="needs the Debian package dataset-fashion-mnist")
def test_fashion_mnist_smoke_study(tmp_path):
    argv = ["--dataset", "fashion-mnist", "--smoke", "--variants", "lc", "lc_instant_10",
            "--runs-dir", str(tmp_path)]
    assert main(argv) == 0
    results = json.loads((tmp_path / "results" / "fashion_mnist.json").read_text())
    assert results["image_size"] == 24 and results["train_samples"] == 256
    assert [(r["variant"], r["steps"]) for r in results["runs"]] == [("lc", 10), ("lc_instant_10", 10)]
    config = json.loads((tmp_path / "lc_instant_10" / "seed0" / "config.json").read_text())
    assert config["pretrained_cfg"]["input_size"] == [1, 24, 24]
    assert (tmp_path / "results" / "fashion_mnist.md").is_file() and (tmp_path / "results" / "fashion_mnist.png").is_file()


def test_summary_and_ordering_against_hand_computed_values():
    runs = [{"variant": v, "seed": s, "test_acc": a, "wall_time_s": 1.0}
            for v, accs in (("conv", (90.0, 92.0, 94.0)), ("lc_instant_1", (80.0, 80.0, 80.0)),
                            ("lc", (81.0, 70.0, 59.0))) for s, a in enumerate(accs)]
    summary = summarise(runs)
    assert summary["conv"]["mean"] == 92.0 and summary["conv"]["std"] == pytest.approx(2.0)
    assert summary["lc"]["std"] == pytest.approx(statistics.stdev([81.0, 70.0, 59.0])) == pytest.approx(11.0)
    checks = {c["pair"]: c for c in ordering_checks(summary)}
    assert checks["conv >= lc_instant_1"]["holds"] and not checks["conv >= lc_instant_1"]["within_noise"]
    assert checks["lc_instant_1 > lc"]["holds"] and checks["lc_instant_1 > lc"]["within_noise"]
    assert checks["lc_instant_1 > lc"]["difference"] == pytest.approx(10.0)
    assert gap_closed(summary) == {"lc_instant_1": pytest.approx(10.0 / 22.0)}
    assert gap_closed({**summary, "conv": dict(summary["conv"], mean=60.0)}) == {}  # no gap, nothing to close


@pytest.mark.parametrize("argv, message", [
    (["--variants", "lc", "cnn"], "unknown variant(s) cnn"),
    (["--seeds", "0"], "--seeds: expected a positive integer"),
    (["--jobs", "0"], "--jobs: expected a positive integer"),
    (["--repeats", "0"], "repeats: expected a positive integer"),
    (["--batch-size", "0"], "batch_size: expected a positive integer, got 0"),
])
def test_bad_options_are_reported(argv, message, capsys, tmp_path):
    assert main(argv + ["--runs-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_tuning_grid_and_its_extension_at_the_edges():
    assert len(tuning_grid("lc")) == sum(len(v) for v in TUNE_LRS.values()) == 6
    grid = tuning_grid("lc_instant_1")
    assert len(grid) == 12 and {s.pool_optimizer_state for s in grid} == {False, True}
    assert {s.optimizer for s in grid} == {"adamw", "momentum"}
    tried = tuning_grid("lc_instant_1")
    assert _edge_extension(Setting("adamw", 3e-2, True), tried) == Setting("adamw", pytest.approx(9e-2), True)
    assert _edge_extension(Setting("momentum", 0.03, False), tried) == Setting("momentum", pytest.approx(0.01), False)
    assert _edge_extension(Setting("adamw", 1e-2, True), tried) is None  # inside the range: done


def test_selection_configs_hold_out_a_tenth_at_the_chosen_setting(tmp_path):
    setup = study_setup("digits", epochs=4)
    cfg = variant_config("lc_instant_1", 0, setup, tmp_path, setting=Setting("momentum", 0.3, True), selection=True)
    assert (cfg.opt, cfg.lr, cfg.sleep_pool_optimizer_state, cfg.val_fraction) == ("momentum", 0.3, True, 0.1)
    final = variant_config("lc_instant_1", 2, setup, tmp_path, setting=Setting("momentum", 0.3, True))
    assert final.val_fraction == 0.0 and final.seed == 2 and final.output_dir != cfg.output_dir
    plain = variant_config("lc", 0, setup, tmp_path, setting=Setting("adamw", 1e-2, True))
    assert plain.sleep_pool_optimizer_state is None  # pooling means nothing without sharing


def test_tuned_smoke_study_records_every_selection_and_its_choice(tmp_path):
    assert main(["--smoke", "--tune", "--variants", "lc_instant_10", "--runs-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results" / "replication.json").read_text())
    selection = results["selection"]
    assert len(selection) >= 12 and {r["variant"] for r in selection} == {"lc_instant_10"}
    assert {(r["optimizer"], r["lr"], r["pool_optimizer_state"]) for r in selection} >= \
        {(s.optimizer, s.lr, s.pool_optimizer_state) for s in tuning_grid("lc_instant_10")}
    best = max(selection, key=lambda r: r["val_acc"])
    choice = results["choices"]["lc_instant_10"]
    assert choice == {k: best[k] for k in ("optimizer", "lr", "pool_optimizer_state")}
    [run] = results["runs"]
    assert {k: run[k] for k in choice} == choice  # the seed trained at its variant's choice
    import yaml
    recipes = sorted((tmp_path / "selection" / "lc_instant_10").glob("select-*-seed0/recipe.yaml"))
    assert len(recipes) == len(selection)
    assert {yaml.safe_load(p.read_text())["val_fraction"] for p in recipes} == {0.1}  # selected on held-out images
    assert "**" in (tmp_path / "results" / "replication.md").read_text()  # the chosen row is marked
