"""Hebbian / rate sleep against an independent oracle and the analytic results of docs/method.md section 3."""
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from timm_lc.layers import LocallyConnected2d
from timm_lc.sharing import (
    SleepDivergenceWarning, contraction_factor, find_pools, max_stable_fan_in, optimal_step, share_weights_,
    sharing_snr)

from test_layers import pad_input
from test_sharing_pools import oracle_pools, tiled_noise


def make_layer(seed=0, **kwargs):
    torch.manual_seed(seed)
    return LocallyConnected2d(bias=False, **kwargs)


def pool_tensors(layer, pools="paper"):
    """(members, C_out, d) fp64 filters of every pool."""
    w = layer.weight.detach().double().flatten(0, 1).flatten(2)
    return [w[pos] for pos in find_pools(layer, pools).positions]


def oracle_sleep(layer, iterations, batch_size, gamma, lr, seed):
    """The rule written out on the tiled noise image: the layer's own forward gives z, unfold gives x."""
    ids = oracle_pools(layer).flatten()
    anchor = layer.weight.detach().double().clone()
    w = anchor.clone()
    g = torch.Generator().manual_seed(seed)
    ho, wo = layer.output_size
    co, cog, cg = layer.out_channels, layer.out_channels // layer.groups, layer.in_channels // layer.groups
    kh, kw = layer.kernel_size
    for _ in range(iterations):
        image, _ = tiled_noise(batch_size, layer.in_channels, layer.kernel_size, layer.input_size, g)
        probe = LocallyConnected2d(layer.in_channels, co, layer.kernel_size, layer.input_size, layer.stride,
                                   layer.padding, layer.dilation, layer.groups, bias=False, dtype=torch.double)
        probe.weight.data.copy_(w)
        with torch.no_grad():
            z = probe(image.double()).flatten(2)  # (B, C_out, L)
        x = F.unfold(pad_input(layer, image.double()), layer.kernel_size, dilation=layer.dilation,
                     stride=layer.stride)
        x = x.view(batch_size, layer.groups, cg, kh, kw, ho * wo).permute(0, 5, 1, 3, 4, 2)  # (B, L, g, u, v, c)
        x = x.reshape(batch_size, ho * wo, layer.groups, -1)
        zc = z.clone()
        for pool in ids.unique():
            if pool >= 0:
                zc[:, :, ids == pool] -= z[:, :, ids == pool].mean(-1, keepdim=True)
        zc[:, :, ids < 0] = 0.0  # singleton pools: z - zbar = 0
        grad = torch.einsum("bgol,blgd->lgod", zc.view(batch_size, layer.groups, cog, -1), x) / batch_size
        grad = grad.reshape(ho, wo, co, kh, kw, cg)
        w = w - lr * (grad + gamma * (w - anchor))
    return w


@pytest.mark.parametrize("geometry", [
    dict(in_channels=3, out_channels=4, kernel_size=3, input_size=(9, 11), padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, input_size=(11, 8), stride=2, padding=1, groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=(3, 2), input_size=(10, 9), dilation=(2, 1), groups=4),
    dict(in_channels=2, out_channels=3, kernel_size=3, input_size=(11, 10), dilation=3),  # non-bijective
])
@pytest.mark.parametrize("solver", ["iterate", "compose"])
def test_hebbian_matches_the_rule_on_the_tiled_noise_image(geometry, solver):
    layer = make_layer(**geometry)
    expected = oracle_sleep(layer, iterations=3, batch_size=16, gamma=0.3, lr=0.05, seed=7)
    report = share_weights_(layer, "hebbian", iterations=3, batch_size=16, gamma=0.3, lr=0.05, seed=7,
                            schedule="constant", solver=solver)
    assert report.layers[0].extras["solver"] == solver
    torch.testing.assert_close(layer.weight.detach().double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("groups,solver", [(1, "iterate"), (1, "compose"), (3, "auto")])
def test_white_noise_fixed_point_and_mean_preservation(groups, solver):
    gamma = 0.5
    layer = make_layer(in_channels=3, out_channels=3, kernel_size=3, input_size=(9, 10), groups=groups)
    before = pool_tensors(layer)
    report = share_weights_(layer, "hebbian", iterations=1500, batch_size=512, gamma=gamma, seed=1, solver=solver)
    assert not report.rolled_back
    for w0, w1 in zip(before, pool_tensors(layer)):
        torch.testing.assert_close(w1.mean(0), w0.mean(0), rtol=1e-5, atol=1e-6)
        dev0, dev1 = w0 - w0.mean(0), w1 - w1.mean(0)
        expected = gamma / (1 + gamma) * dev0
        assert (dev1 - expected).norm() / expected.norm() < 0.03


def test_default_sleep_is_stable_at_fan_in_4608_and_contracts_at_the_optimal_rate():
    layer = make_layer(in_channels=512, out_channels=2, kernel_size=3, input_size=(8, 8))
    assert layer.fan_in == 4608
    with warnings.catch_warnings():
        warnings.simplefilter("error", SleepDivergenceWarning)
        report = share_weights_(layer, "hebbian", iterations=100, batch_size=128, seed=0, trace=True)
    d, b = 4608, 128
    theory = math.sqrt(contraction_factor(optimal_step(d, b, 1e-5), d, b, 1e-5) ** 100)  # ~0.25
    measured = report.layers[0].trace[-1]  # |D - D*| / |D_0 - D*|
    assert abs(math.log(measured / theory)) < math.log(1.3), (measured, theory)


def test_reference_fixed_step_diverges_at_fan_in_4608_and_is_rolled_back():
    assert 2400 < max_stable_fan_in(0.1, 128) < 2432
    layer = make_layer(in_channels=512, out_channels=2, kernel_size=3, input_size=(8, 8))
    before = layer.weight.detach().clone()
    with pytest.warns(SleepDivergenceWarning, match="rolled back"):
        report = share_weights_(layer, "hebbian", lr=0.1, schedule="constant", seed=0)
    assert report.rolled_back == [""] and report.layers[0].iterations == 10
    assert torch.equal(layer.weight.detach(), before)


def test_absurd_step_is_rolled_back_with_a_warning():
    layer = make_layer(in_channels=2, out_channels=2, kernel_size=3, input_size=(7, 7), padding=1)
    before = layer.weight.detach().clone()
    for solver in ("iterate", "compose"):
        with pytest.warns(SleepDivergenceWarning, match="diverged"):
            report = share_weights_(layer, "hebbian", lr=1e6, seed=0, solver=solver)
        assert report.layers[0].rolled_back and "iterations" in report.layers[0].reason
        assert torch.equal(layer.weight.detach(), before)


def test_same_seed_same_bits_and_global_rng_untouched():
    layers = [make_layer(in_channels=3, out_channels=4, kernel_size=3, input_size=(8, 9), padding=1)
              for _ in range(3)]
    state = torch.get_rng_state()
    for layer, seed in zip(layers, (5, 5, 6)):
        share_weights_(layer, "hebbian", iterations=20, seed=seed)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(layers[0].weight, layers[1].weight)
    assert not torch.equal(layers[0].weight, layers[2].weight)


def test_autograd_state_untouched_and_low_precision_written_back():
    layer = make_layer(in_channels=3, out_channels=4, kernel_size=3, input_size=(8, 8), padding=1)
    reference = make_layer(in_channels=3, out_channels=4, kernel_size=3, input_size=(8, 8), padding=1)
    layer.to(torch.bfloat16)
    reference.weight.data.copy_(layer.weight.data.float())
    param = layer.weight
    layer(torch.randn(1, 3, 8, 8, dtype=torch.bfloat16)).sum().backward()
    grad = param.grad.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        share_weights_(layer, "hebbian", iterations=10, seed=3)
    share_weights_(reference, "hebbian", iterations=10, seed=3)
    assert layer.weight is param and param.requires_grad and param.dtype == torch.bfloat16
    assert torch.equal(param.grad, grad)
    torch.testing.assert_close(param.detach().float(), reference.weight.detach().to(torch.bfloat16).float())


def test_rate_deviations_follow_the_hebbian_rule_and_the_mean_shrinks_as_predicted():
    gamma, alpha = 1.0, 3.0
    kwargs = dict(in_channels=2, out_channels=2, kernel_size=3, input_size=(8, 8))
    hebb, rate = make_layer(**kwargs), make_layer(**kwargs)
    before = pool_tensors(rate)
    share_weights_(hebb, "hebbian", iterations=300, batch_size=512, gamma=gamma, seed=2)
    report = share_weights_(rate, "rate", iterations=300, batch_size=512, gamma=gamma, seed=2, alpha=alpha, b=0.5)
    assert report.layers[0].extras["settle_error"] < 1e-3
    shrink = gamma * (1 + alpha) / (1 + gamma * (1 + alpha))  # white-noise fixed point of the pool mean
    for w0, wh, wr in zip(before, pool_tensors(hebb), pool_tensors(rate)):
        torch.testing.assert_close(wr - wr.mean(0), wh - wh.mean(0), rtol=1e-2, atol=2e-3)
        assert abs(wr.mean(0).norm() / w0.mean(0).norm() - shrink) < 0.02


def test_rate_with_large_alpha_reaches_the_hebbian_solution():
    kwargs = dict(in_channels=2, out_channels=2, kernel_size=3, input_size=(7, 7))
    hebb, rate = make_layer(**kwargs), make_layer(**kwargs)
    share_weights_(hebb, "hebbian", iterations=30, batch_size=256, gamma=1.0, seed=4)
    share_weights_(rate, "rate", iterations=30, batch_size=256, gamma=1.0, seed=4, alpha=200.0, tol=1e-2)
    # the pool mean keeps gamma (1 + alpha) / (1 + gamma (1 + alpha)) = 201/202 of itself
    torch.testing.assert_close(rate.weight, hebb.weight, rtol=0, atol=0.01 * float(hebb.weight.detach().abs().max()))


def test_rate_rejects_an_unstable_euler_step():
    with pytest.raises(ValueError, match="dt must be in"):
        share_weights_(make_layer(in_channels=1, out_channels=1, kernel_size=3, input_size=5), "rate",
                       alpha=10.0, dt=0.5)


def test_sharing_snr_against_a_direct_computation():
    layer = make_layer(in_channels=3, out_channels=2, kernel_size=3, input_size=(9, 8), padding=1)
    layer.weight.data.add_(1.0)  # a nonzero pool mean
    ids = oracle_pools(layer).flatten()
    w = layer.weight.detach().double().flatten(0, 1)
    ratios, dev, norm = [], 0.0, 0.0
    for pool in ids.unique():
        if pool >= 0:
            members = w[ids == pool]
            m, v = members.mean(0), members.var(0, unbiased=False)
            ratios.append((m ** 2 / v).flatten())
            dev += float((members - m).square().sum())
            norm += float(members.square().sum())
    result = sharing_snr(layer)
    assert result["snr"] == pytest.approx(float(torch.cat(ratios).mean()), rel=1e-5)
    assert result["deviation"] == pytest.approx(math.sqrt(dev / norm), rel=1e-5)
    assert result["layers"][""]["pools"] == 9
    share_weights_(layer, "instant")
    after = sharing_snr(layer)
    assert after["deviation"] < 1e-6 and after["snr"] > 1e10 and math.isfinite(after["snr"])


def test_report_is_json_and_covers_every_layer():
    model = torch.nn.Sequential(
        LocallyConnected2d(2, 3, 3, (8, 8), padding=1), torch.nn.ReLU(),
        LocallyConnected2d(3, 3, 1, (8, 8)), LocallyConnected2d(3, 2, 3, (12, 12), stride=2))
    report = share_weights_(model, "hebbian", iterations=5, trace=True)
    data = json.loads(json.dumps(report.to_dict()))
    assert [layer["name"] for layer in data["layers"]] == ["0", "2", "3"]
    assert data["deviation_after"] < data["deviation_before"] and data["snr"] > data["snr_before"]
    assert len(data["layers"][0]["trace"]) == 5 and data["wall_time"] > 0
    assert set(sharing_snr(model)["layers"]) == {"0", "2", "3"}


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(mode="sleep"), ValueError, "mode must be one of"),
    (dict(pools="rows"), ValueError, "pools must be one of"),
    (dict(iterations=-1), ValueError, "iterations must be"),
    (dict(mode="hebbian", alpha=3.0), TypeError, "unexpected option"),
    (dict(mode="instant", trace=True), TypeError, "unexpected option"),
    (dict(mode="hebbian", schedule="cosine"), ValueError, "schedule must be one of"),
    (dict(mode="hebbian", solver="magic"), ValueError, "solver must be one of"),
    (dict(lr=-1.0), ValueError, "lr must be"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        share_weights_(LocallyConnected2d(1, 1, 3, 5), **kwargs)
