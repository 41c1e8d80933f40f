"""Sharing and its metrics are exact to each dtype's precision: float64 weights are shared in float64
(checked against an extended-precision oracle), lower precisions in float32, and sharing is idempotent."""
import numpy as np
import pytest
import timm
import torch

import timm_lc  # noqa: F401
from timm_lc.layers import LocallyConnected2d
from timm_lc.sharing import share_weights_, sharing_snr

from test_sharing_hebbian import make_layer, oracle_sleep
from test_sharing_pools import oracle_pools


def longdouble_pool_means(layer, ids):
    """{pool id: the exact-as-possible mean of its members} from numpy's extended precision, per position id."""
    w = layer.weight.detach().flatten(0, 1).numpy().astype(np.longdouble)
    return {int(pool): w[(ids == pool).numpy()].mean(0) for pool in ids.unique() if pool >= 0}


def residue_ids(layer):
    """Output positions grouped by ``(h mod kh, w mod kw)`` (the reference's instant-sharing pools)."""
    kh, kw = layer.kernel_size
    h, w = torch.meshgrid(torch.arange(layer.output_size[0]), torch.arange(layer.output_size[1]), indexing="ij")
    return ((h % kh) * kw + (w % kw)).flatten()


@pytest.mark.parametrize("pools", ["paper", "residue"])
def test_float64_instant_sharing_is_the_exact_pool_mean_and_idempotent(pools):
    torch.manual_seed(0)
    model = timm.create_model("lc_resnet_tiny", num_classes=10).double()
    for m in model.modules():
        if isinstance(m, LocallyConnected2d):
            m.weight.data.add_(3.0)  # a pool mean far from zero: fp32 rounding would show at ~1e-7
    layers = [m for m in model.modules() if isinstance(m, LocallyConnected2d)]
    expected = []
    for m in layers:
        ids = oracle_pools(m).flatten() if pools == "paper" else residue_ids(m)
        expected.append((ids, longdouble_pool_means(m, ids), m.weight.detach().flatten(0, 1).clone()))
    share_weights_(model, "instant", pools=pools)
    for m, (ids, means, before) in zip(layers, expected):
        assert m.weight.dtype == torch.float64
        w = m.weight.detach().flatten(0, 1)
        for pool, mean in means.items():
            err = np.abs(w[ids == pool].numpy().astype(np.longdouble) - mean).max()
            assert err < 1e-12, (pool, float(err))
        assert torch.equal(w[ids < 0], before[ids < 0])  # positions outside every pool untouched
    once = {k: v.clone() for k, v in model.state_dict().items()}
    share_weights_(model, "instant", pools=pools)
    assert all(torch.equal(once[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_instant_sharing_is_idempotent_in_lower_precisions(dtype):
    layer = make_layer(in_channels=3, out_channels=4, kernel_size=3, input_size=(9, 10), padding=1).to(dtype)
    share_weights_(layer, "instant", pools="residue")
    once = layer.weight.detach().clone()
    share_weights_(layer, "instant", pools="residue")
    assert layer.weight.dtype == dtype and torch.equal(layer.weight.detach(), once)


def test_float32_means_for_half_precision_weights():
    """A pool whose fp16 members sum past fp16's range still gets its mean (computed in float32)."""
    layer = make_layer(in_channels=1, out_channels=1, kernel_size=1, input_size=(16, 16)).half()
    layer.weight.data.fill_(60000.0)  # fp16's max is 65504: an fp16 sum would overflow
    layer.weight.data[0, 0] = 50000.0
    share_weights_(layer, "instant", pools="full")
    expected = torch.tensor((255 * 60000.0 + 50000.0) / 256, dtype=torch.float16)
    assert torch.equal(layer.weight.detach(), expected.expand_as(layer.weight))


@pytest.mark.parametrize("solver", ["iterate", "compose"])
def test_float64_hebbian_matches_the_rule_to_float64_precision(solver):
    layer = make_layer(in_channels=3, out_channels=4, kernel_size=3, input_size=(9, 8), padding=1).double()
    expected = oracle_sleep(layer, iterations=3, batch_size=16, gamma=0.3, lr=0.05, seed=7)
    share_weights_(layer, "hebbian", iterations=3, batch_size=16, gamma=0.3, lr=0.05, seed=7,
                   schedule="constant", solver=solver)
    assert layer.weight.dtype == torch.float64
    torch.testing.assert_close(layer.weight.detach(), expected, rtol=0, atol=1e-12)


def test_hebbian_leaves_a_shared_layer_bitwise_unchanged():
    layer = make_layer(in_channels=3, out_channels=4, kernel_size=3, input_size=(9, 8), padding=1).double()
    share_weights_(layer, "instant", pools="residue")
    shared = layer.weight.detach().clone()
    share_weights_(layer, "hebbian", pools="residue", iterations=20, batch_size=32, gamma=0.0, seed=1)
    assert torch.equal(layer.weight.detach(), shared)


def test_float64_rate_deviations_follow_the_hebbian_rule_to_float64_precision():
    """With the circuit settled to 1e-13, the rate rule moves the deviations exactly as the Hebbian rule."""
    kwargs = dict(in_channels=2, out_channels=2, kernel_size=3, input_size=(7, 7))
    hebb, rate = make_layer(**kwargs).double(), make_layer(**kwargs).double()
    share_weights_(hebb, "hebbian", iterations=5, batch_size=32, gamma=0.5, seed=2, schedule="constant", lr=0.05)
    report = share_weights_(rate, "rate", iterations=5, batch_size=32, gamma=0.5, seed=2, schedule="constant",
                            lr=0.05, alpha=3.0, tol=1e-13)
    assert report.layers[0].extras["settle_error"] < 1e-11  # float32 cannot settle below ~1e-7
    ids = oracle_pools(rate).flatten()
    wh, wr = hebb.weight.detach().flatten(0, 1), rate.weight.detach().flatten(0, 1)
    for pool in ids.unique():
        if pool >= 0:
            members = ids == pool
            torch.testing.assert_close(wr[members] - wr[members].mean(0), wh[members] - wh[members].mean(0),
                                       rtol=0, atol=1e-10)


def test_float64_snr_resolves_deviations_below_float32_precision():
    layer = make_layer(in_channels=2, out_channels=2, kernel_size=3, input_size=(8, 8)).double()
    torch.manual_seed(1)
    layer.weight.data = 1.0 + 1e-9 * torch.randn_like(layer.weight)  # 1 + 1e-9 is 1 in float32
    ids = oracle_pools(layer).flatten()
    w = layer.weight.detach().flatten(0, 1).numpy().astype(np.longdouble)
    ratios, dev, norm = [], 0.0, 0.0
    for pool in ids.unique():
        if pool >= 0:
            members = w[(ids == pool).numpy()]
            m = members.mean(0)
            v = ((members - m) ** 2).mean(0)
            ratios.append((m * m / v).ravel())
            dev += float(((members - m) ** 2).sum())
            norm += float((members ** 2).sum())
    result = sharing_snr(layer)
    assert result["snr"] == pytest.approx(float(np.concatenate(ratios).mean()), rel=1e-6)
    assert result["deviation"] == pytest.approx(float(np.sqrt(dev / norm)), rel=1e-6)
    share_weights_(layer, "instant")
    after = sharing_snr(layer)
    assert after["deviation"] == 0.0 and after["snr"] == pytest.approx(1 / torch.finfo(torch.float64).eps ** 2)
