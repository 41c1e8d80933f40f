"""Every YAML recipe loads, and trains for 2 steps on a tiny offline fixture with the real columns."""
from pathlib import Path

import pytest
import yaml

from timm_lc_settings.train import TrainConfig, load_config

from fixtures.train_data import make_dataset

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
DATASET_RECIPES = sorted(p for p in RECIPES.glob("*/*.yaml") if p.parent.name != "accelerate")
VARIANTS = {"conv", "lc", "lc_translations", "lc_hebb_every1", "lc_hebb_every10", "lc_hebb_every100",
            "lc_instant_every10"}
EXTRA_VARIANTS = {"imagenet": {"lc_convstem_instant_every10"}, "cifar10": {"lc_instant_every1_pooled"}}
# a small input keeps every recipe's own architecture but makes 2 steps take a fraction of a second
SMALL_IMG = {"cifar10": 8, "cifar100": 8, "tinyimagenet": 8, "imagenet": 32}


def test_every_dataset_has_every_variant():
    for dataset in SMALL_IMG:
        assert {p.stem for p in (RECIPES / dataset).glob("*.yaml")} == VARIANTS | EXTRA_VARIANTS.get(dataset, set())


def test_demo_recipe_equals_the_defaults():
    cfg = load_config(RECIPES / "demo.yaml")
    assert {k: v for k, v in cfg.to_dict().items() if k != "name"} == \
        {k: v for k, v in TrainConfig().to_dict().items() if k != "name"}


def test_accelerate_configs_parse():
    for name in ("single_gpu", "multi_gpu", "cpu_2proc"):
        data = yaml.safe_load((RECIPES / "accelerate" / f"{name}.yaml").read_text())
        assert data["distributed_type"] in ("NO", "MULTI_GPU")
    cpu = yaml.safe_load((RECIPES / "accelerate" / "cpu_2proc.yaml").read_text())
    assert cpu["use_cpu"] is True and cpu["num_processes"] == 2


@pytest.mark.parametrize("recipe", DATASET_RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_paper_settings(recipe):
    cfg = load_config(recipe)
    dataset = recipe.parent.name
    assert cfg.dataset == dataset and cfg.epochs == 200 and cfg.opt == "adamw"
    assert cfg.decay_milestones == [100, 150] and cfg.decay_rate == 0.25
    assert (cfg.lr, cfg.weight_decay) == ((5e-4, 1e-2) if dataset == "imagenet" else (0.01, 1e-4))
    assert cfg.batch_size * cfg.repeats == (256 if dataset == "imagenet" else 512)
    sleeping = recipe.stem.startswith(("lc_hebb", "lc_instant", "lc_convstem_instant"))
    assert (cfg.sleep is not False) == sleeping
    if recipe.stem.startswith("lc_hebb_every"):  # the dynamic variants: the model's own (Hebbian) settings
        assert cfg.model.endswith("_hebb") and cfg.sleep_mode is None and cfg.sleep_pools is None
        assert cfg.sleep_every == int(recipe.stem[len("lc_hebb_every"):])
    else:
        assert not cfg.model.endswith("_hebb")
    if "instant_every10" in recipe.stem:  # the reference README's main command
        assert (cfg.sleep, cfg.sleep_every, cfg.sleep_mode, cfg.sleep_pools) == (True, 10, "instant", "residue")
    if recipe.stem == "lc_instant_every1_pooled":  # what the tuned Fashion-MNIST study found best
        assert (cfg.sleep_every, cfg.sleep_mode, cfg.sleep_pools, cfg.sleep_pool_optimizer_state) == \
            (1, "instant", "residue", True)
    else:
        assert not cfg.sleep_pool_optimizer_state
    if recipe.stem == "lc_convstem_instant_every10":
        assert cfg.model == "lc_resnet18_half_convstem"
    if recipe.stem == "conv":
        assert cfg.model_kwargs == {"locally_connected": False}
    # the reference's augmentation: translations only in the translation baseline, flips but on TinyImageNet
    assert (cfg.repeats > 1) == (recipe.stem == "lc_translations")
    if dataset != "imagenet":
        assert (cfg.translate > 0) == (recipe.stem == "lc_translations")
    assert cfg.hflip == (dataset != "tinyimagenet")


@pytest.mark.parametrize("recipe", DATASET_RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_trains_two_steps(recipe, tmp_path_factory):
    from timm_lc.train import train
    import timm

    dataset = recipe.parent.name
    fixture = make_dataset(dataset, tmp_path_factory.getbasetemp() / "recipe_fixtures")
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(recipe, overrides=dict(
        dataset_path=str(fixture), img_size=SMALL_IMG[dataset], max_steps=2, batch_size=2, eval_batch_size=6,
        num_workers=0, mixed_precision="no", output_dir=str(out), progress=False, plots=False,
        sleep_iterations=2, sleep_batch_size=8, checkpoint_every=1, keep_checkpoints=1))
    final = train(cfg)
    assert final["step"] == 2 and 0.0 <= final["test_acc"] <= 100.0
    assert (out / "model.safetensors").is_file() and (out / "recipe.yaml").is_file()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000002"]
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert model.num_classes == {"cifar10": 10, "cifar100": 100, "tinyimagenet": 200, "imagenet": 1000}[dataset]
