"""Pooled optimiser state: at a share, each pool's Adam moments / SGD momentum become the pool mean.

The oracle is an independent computation of the pools: ``residue`` pools are the output residue
classes ``(h mod kh, w mod kw)``, ``full`` pools all positions of a channel.
"""
import pytest
import torch
import torch.nn.functional as F

from timm_lc import LocallyConnected2d, share_weights_
from timm_lc.sharing.optimizer_state import pool_optimizer_state_
from timm_lc.train import SleepPhase


def _layer(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(LocallyConnected2d(2, 3, 3, (7, 5), padding=1, dtype=dtype), torch.nn.Flatten(),
                               torch.nn.LazyLinear(4, dtype=dtype))


def _train(model, optimizer, steps=3):
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(6, 2, 7, 5, generator=gen, dtype=model[0].weight.dtype)
        F.cross_entropy(model(x), torch.randint(0, 4, (6,), generator=gen)).backward()
        optimizer.step()
        optimizer.zero_grad()


def _expected_pool_mean(state: torch.Tensor, pools: str) -> torch.Tensor:
    """(H_out, W_out, ...) state with every residue class (or every position) set to its mean."""
    out = state.clone()
    if pools == "full":
        return out.mean((0, 1), keepdim=True).expand_as(out).clone()
    for i in range(3):
        for j in range(3):
            out[i::3, j::3] = state[i::3, j::3].mean((0, 1), keepdim=True)
    return out


@pytest.mark.parametrize("pools", ["residue", "full"])
@pytest.mark.parametrize("make_optimizer, names", [
    (lambda p: torch.optim.AdamW(p, lr=1e-2), ("exp_avg", "exp_avg_sq")),
    (lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9), ("momentum_buffer",)),
])
def test_state_is_averaged_over_the_weights_pools(pools, make_optimizer, names):
    model = _layer()
    model(torch.zeros(1, 2, 7, 5))
    optimizer = make_optimizer(model.parameters())
    _train(model, optimizer)
    weight = model[0].weight
    before = {n: optimizer.state[weight][n].clone() for n in names}
    head = {k: v.clone() for k, v in optimizer.state[model[2].weight].items()}
    share_weights_(model, "instant", pools=pools, optimizer=optimizer)
    for n in names:
        torch.testing.assert_close(optimizer.state[weight][n], _expected_pool_mean(before[n], pools),
                                   rtol=1e-6, atol=1e-7)
    for k, v in optimizer.state[model[2].weight].items():  # not an LC weight: untouched
        assert torch.equal(v, head[k])
    torch.testing.assert_close(weight, _expected_pool_mean(weight, pools))  # the weights were shared too


def test_float64_state_pools_exactly():
    model = _layer(torch.float64)
    model(torch.zeros(1, 2, 7, 5, dtype=torch.float64))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, optimizer)
    state = optimizer.state[model[0].weight]["exp_avg_sq"]
    expected = _expected_pool_mean(state.clone(), "residue")
    assert pool_optimizer_state_(optimizer, model, "residue") == ["0.exp_avg", "0.exp_avg_sq"]
    torch.testing.assert_close(state, expected, rtol=1e-13, atol=0)


def test_without_optimizer_the_state_is_untouched():
    model = _layer()
    model(torch.zeros(1, 2, 7, 5))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _train(model, optimizer)
    before = optimizer.state[model[0].weight]["exp_avg"].clone()
    share_weights_(model, "instant", pools="residue")
    assert torch.equal(optimizer.state[model[0].weight]["exp_avg"], before)


def test_sleep_phase_needs_the_optimizer_to_pool_its_state():
    from accelerate import Accelerator
    model = _layer()
    model(torch.zeros(1, 2, 7, 5))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _train(model, optimizer)
    sleep = SleepPhase(every=1, mode="instant", pools="residue", pool_optimizer_state=True)
    assert sleep.pool_optimizer_state and sleep.config()["pool_optimizer_state"] is True
    accelerator = Accelerator(cpu=True)
    with pytest.raises(ValueError, match="needs the optimiser"):
        sleep.step(accelerator, model)
    before = optimizer.state[model[0].weight]["exp_avg"].clone()
    losses = iter([2.0, 1.5])
    report = sleep.step(accelerator, model, optimizer=optimizer, probe=lambda: next(losses))
    assert (report.loss_before, report.loss_after) == (2.0, 1.5)
    torch.testing.assert_close(optimizer.state[model[0].weight]["exp_avg"], _expected_pool_mean(before, "residue"))
