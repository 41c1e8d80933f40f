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
