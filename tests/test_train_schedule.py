"""decay_milestones mean what torch's MultiStepLR (and the reference code) mean."""
import pytest
import torch
from timm.scheduler import create_scheduler_v2

from timm_lc_settings.train import config_from_dict
from timm_lc.train.loop import _timm_milestones


@pytest.mark.parametrize("milestones", [[1], [2, 3], [100, 150]])
def test_lr_decays_once_m_epochs_are_complete_like_torch(milestones):
    cfg = config_from_dict(dict(epochs=max(milestones) + 2, decay_milestones=milestones, decay_rate=0.25, lr=1.0))
    ours = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler, _ = create_scheduler_v2(ours, sched="multistep", num_epochs=cfg.epochs, decay_rate=cfg.decay_rate,
                                       decay_milestones=_timm_milestones(cfg), step_on_epochs=True,
                                       updates_per_epoch=10)
    oracle = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    torch_sched = torch.optim.lr_scheduler.MultiStepLR(oracle, milestones=milestones, gamma=cfg.decay_rate)
    for epoch in range(cfg.epochs):
        scheduler.step(epoch)
        assert ours.param_groups[0]["lr"] == pytest.approx(oracle.param_groups[0]["lr"]), epoch
        oracle.step()
        torch_sched.step()


def _lrs(cfg):
    """The lr of every epoch as the training loop's scheduler sets it."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler, _ = create_scheduler_v2(opt, sched=cfg.sched, num_epochs=cfg.epochs, decay_rate=cfg.decay_rate,
                                       decay_milestones=_timm_milestones(cfg), step_on_epochs=True,
                                       updates_per_epoch=10)
    lrs = []
    for epoch in range(cfg.epochs):
        scheduler.step(epoch)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("epochs,expected", [(1, []), (2, [1]), (5, [3, 4]), (30, [15, 23]), (200, [100, 150])])
def test_unset_milestones_scale_with_the_epochs(epochs, expected):
    from timm_lc_cli.train import parse_config
    from timm_lc.train.resolve import resolve_config
    cfg = resolve_config(parse_config(["--epochs", str(epochs)]))  # the demo recipe sets no milestones
    assert cfg.decay_milestones == expected
    lr = cfg.lr
    assert _lrs(cfg) == pytest.approx([lr * cfg.decay_rate ** sum(e >= m for m in expected) for e in range(epochs)])


def test_milestones_past_the_end_are_an_error():
    from pathlib import Path
    from timm_lc_settings.train import load_config
    recipe = Path(__file__).resolve().parents[1] / "recipes/cifar10/lc.yaml"  # epochs 200, milestones [100, 150]
    with pytest.raises(ValueError, match=r"'decay_milestones': \[100, 150\] of \[100, 150\] at or past the end of "
                                         r"the 5 epochs would never apply.*--decay-milestones \"\[3, 4\]\""):
        load_config(recipe, {"epochs": 5})
    with pytest.raises(ValueError, match=r"\[150\] of \[100, 150\] at or past the end of the 120 epochs"):
        load_config(recipe, {"epochs": 120})
    assert load_config(recipe, {"epochs": 5, "decay_milestones": [2]}).decay_milestones == [2]
    assert load_config(recipe, {"epochs": 5, "decay_milestones": None}).decay_milestones is None  # then scaled
    assert load_config(recipe, {"epochs": 5, "sched": "cosine"}).sched == "cosine"  # milestones unused


def test_a_multistep_schedule_on_updates_needs_explicit_milestones():
    with pytest.raises(ValueError, match="sched_on_updates the milestones count optimiser updates"):
        config_from_dict(dict(sched_on_updates=True))
    assert config_from_dict(dict(sched_on_updates=True, decay_milestones=[1000])).decay_milestones == [1000]
