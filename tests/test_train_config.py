"""Config loading, command-line overrides and the errors for bad recipes and flags."""
import pytest

from timm_lc_cli.train import main, parse_config
from timm_lc_settings.train import TrainConfig, load_config


def test_defaults_are_the_demo():
    cfg = parse_config([])
    assert cfg == TrainConfig() and cfg.dataset == "demo" and cfg.model == "lc_resnet_tiny_hebb"


def test_recipe_then_flags_override(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 7\nlr: 1e-3\nsleep_every: 5\ndecay_milestones: [3, 5]\n")
    cfg = parse_config(["--config", str(recipe), "--lr", "0.02", "--max-steps", "9", "--overwrite",
                        "--sleep", "false", "--model-kwargs", "{locally_connected: false}", "--output-dir", "x"])
    assert (cfg.epochs, cfg.lr, cfg.max_steps, cfg.sleep_every, cfg.decay_milestones) == (7, 0.02, 9, 5, [3, 5])
    assert cfg.overwrite is True and cfg.sleep is False and cfg.model_kwargs == {"locally_connected": False}
    assert cfg.output_dir == "x" and cfg.name == "r"  # yaml "1e-3" (a string in YAML 1.1) became a float
    assert isinstance(load_config(recipe).lr, float)


def test_unknown_recipe_key_lists_valid_keys(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match=r"unknown config key 'epochz'.*did you mean 'epochs'.*valid keys: .*max_steps"):
        load_config(recipe)


def test_unknown_flag_is_an_error_listing_valid_keys(capsys):
    assert main(["--max-stepz", "3"]) == 2
    err = capsys.readouterr().err
    assert "--max-stepz" in err and "--max-steps" in err and "--checkpoint-every" in err


@pytest.mark.parametrize("argv, match", [
    (["--epochs", "abc"], "expected an integer"),
    (["--epochs", "0"], "positive"),
    (["--mixed-precision", "fp8"], "mixed_precision"),
    (["--sleep-mode", "dream"], "sleep_mode"),
    (["--resume", "--overwrite"], "contradict"),
    (["--decay-milestones", "3"], "expected a list"),
])
def test_bad_values(argv, match):
    with pytest.raises(ValueError, match=match):
        parse_config(argv)


def test_missing_recipe_file(capsys):
    assert main(["--config", "does/not/exist.yaml"]) == 2
    assert "does/not/exist.yaml" in capsys.readouterr().err


def test_resume_reuses_the_runs_recipe(tmp_path):
    from timm_lc.train.resolve import save_config
    (tmp_path / "run").mkdir()
    save_config(TrainConfig(epochs=3, lr=0.1, overwrite=True, output_dir=str(tmp_path / "run")),
                tmp_path / "run" / "recipe.yaml")
    cfg = parse_config(["--output-dir", str(tmp_path / "run"), "--resume", "--max-steps", "4"])
    assert (cfg.epochs, cfg.lr, cfg.max_steps, cfg.resume, cfg.overwrite) == (3, 0.1, 4, True, False)
