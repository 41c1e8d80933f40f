"""The optimiser of timm-lc train: torch's fused step where it has one, the same updates as the default step."""
import pytest
import torch
from timm.optim import create_optimizer_v2

from timm_lc.train.optimizer import create_optimizer


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.LayerNorm(7), torch.nn.Linear(7, 3))


@pytest.mark.parametrize("opt", ["adamw", "adam", "sgd", "momentum"])
def test_torch_optimisers_take_their_fused_step_with_the_same_updates(opt):
    model, oracle_model = _model(), _model()
    optimizer = create_optimizer(model, opt, lr=1e-2, weight_decay=1e-2)
    assert optimizer.defaults["fused"] is True
    oracle = create_optimizer_v2(oracle_model, opt=opt, lr=1e-2, weight_decay=1e-2, momentum=0.9)  # default step
    assert not oracle.defaults["fused"]
    for step in range(5):
        x = torch.randn(8, 5, generator=torch.Generator().manual_seed(step))
        for m, o in ((model, optimizer), (oracle_model, oracle)):
            m(x).square().mean().backward()
            o.step()
            o.zero_grad()
    for p, q, start in zip(model.parameters(), oracle_model.parameters(), _model().parameters()):
        assert not torch.equal(p, start)
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_timm_optimisers_without_a_fused_step_run_as_they_are():
    optimizer = create_optimizer(_model(), "lamb", lr=1e-2, weight_decay=1e-2)
    assert "fused" not in optimizer.defaults
