"""``residue`` pools: the reference's instant sharing (residue classes, borders included), re-derived."""
import pytest
import timm
import torch
import torch.nn.functional as F

import timm_lc  # noqa: F401
from timm_lc.layers import LocallyConnected2d
from timm_lc.sharing import find_pools, pool_ids, share_weights_, sharing_snr

from test_sharing_pools import GEOMETRIES, same_partition


def reference_share_instantly_(layer):
    """The reference's ``share_weights_instantly``, restated on our layout: for each (i, j) < (kh, kw),
    the filters at output positions ``[i::kh, j::kw]`` are replaced by their mean."""
    kh, kw = layer.kernel_size
    w = layer.weight.data  # (H_out, W_out, C_out, kh, kw, C_in/groups)
    for i in range(kh):
        for j in range(kw):
            block = w[i::kh, j::kw]
            w[i::kh, j::kw] = block.mean((0, 1), keepdim=True).expand_as(block)


def padded_noise_patches(layer, generator):
    """Every position's patch of k x k noise tiled over the *padded* input (origin at padded pixel 0)."""
    kh, kw = layer.kernel_size
    left, right, top, bottom = layer.pads
    size = (layer.input_size[0] + top + bottom, layer.input_size[1] + left + right)
    xi = torch.randn(1, layer.in_channels, kh, kw, generator=generator, dtype=torch.double)
    image = xi[:, :, torch.arange(size[0]) % kh][:, :, :, torch.arange(size[1]) % kw]
    return F.unfold(image, layer.kernel_size, dilation=layer.dilation, stride=layer.stride)[0].t()


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_residue_pools_are_output_residue_classes(geometry):
    layer = LocallyConnected2d(2, 1, bias=False, **geometry)
    ho, wo = layer.output_size
    kh, kw = layer.kernel_size
    expected = (torch.arange(ho) % kh)[:, None] * kw + (torch.arange(wo) % kw)[None, :]
    sizes = torch.bincount(expected.flatten(), minlength=kh * kw)
    expected = torch.where(sizes[expected] >= 2, expected, -1)  # singleton classes share with nobody
    assert same_partition(pool_ids(layer, "residue"), expected)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_residue_pool_members_see_identical_noise_tiled_over_the_padded_input(geometry):
    """The sleep's input for residue pools: every member of a class reads the same noise patch, in the
    order its slot map says."""
    layer = LocallyConnected2d(2, 1, bias=False, **geometry)
    patches = padded_noise_patches(layer, torch.Generator().manual_seed(5))  # (L, C * kh * kw)
    kh, kw = layer.kernel_size
    c = layer.in_channels
    pools = find_pools(layer, "residue")
    for positions, slot_map in zip(pools.positions, pools.slot_maps):
        seen = patches[positions].view(-1, c, kh * kw)
        assert torch.equal(seen, seen[:1].expand_as(seen))
        # offset s of every member reads noise slot slot_map[s]: equal offsets of equal slots agree
        same_slot = slot_map[:, None] == slot_map[None, :]
        assert torch.equal(seen[0][:, :, None] == seen[0][:, None, :], same_slot.expand(c, -1, -1))


@pytest.mark.parametrize("model_name", ["lc_resnet_tiny", "lc_resnet20"])
def test_instant_residue_equals_the_reference_on_every_layer(model_name):
    torch.manual_seed(0)
    model = timm.create_model(model_name, in_chans=1, num_classes=10)
    oracle = timm.create_model(model_name, in_chans=1, num_classes=10)
    oracle.load_state_dict(model.state_dict())
    share_weights_(model, mode="instant", pools="residue")
    layers = [m for m in oracle.modules() if isinstance(m, LocallyConnected2d)]
    assert any(m.kernel_size == (1, 1) for m in layers) and any(m.stride == (2, 2) for m in layers)
    for m in layers:
        reference_share_instantly_(m)
    for (name, a), b in zip(model.state_dict().items(), oracle.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


def test_instant_residue_on_odd_geometries_equals_the_reference():
    torch.manual_seed(0)
    for geometry in GEOMETRIES:
        layer = LocallyConnected2d(4, 6, groups=2, **geometry)
        oracle = LocallyConnected2d(4, 6, groups=2, **geometry)
        oracle.load_state_dict(layer.state_dict())
        share_weights_(layer, mode="instant", pools="residue")
        reference_share_instantly_(oracle)
        torch.testing.assert_close(layer.weight, oracle.weight, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(layer.bias, oracle.bias, rtol=0, atol=0)  # bias untouched


def test_instant_residue_makes_1x1_layers_exact_convolutions():
    torch.manual_seed(0)
    layer = LocallyConnected2d(3, 4, 1, (6, 5), bias=False)
    share_weights_(layer, mode="instant", pools="residue")
    kernel = layer.weight.detach()[0, 0].permute(0, 3, 1, 2)  # (C_out, C_in, 1, 1)
    x = torch.randn(2, 3, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.conv2d(x, kernel), rtol=1e-5, atol=1e-6)


def test_hebbian_sleep_with_residue_pools_converges_to_the_instant_result():
    """With gamma = 0 the sleep's fixed point on white noise is the pool mean: the instant result,
    border positions included."""
    torch.manual_seed(0)
    layer = LocallyConnected2d(2, 3, 3, (9, 8), stride=2, padding=1)
    target = LocallyConnected2d(2, 3, 3, (9, 8), stride=2, padding=1)
    target.load_state_dict(layer.state_dict())
    share_weights_(target, mode="instant", pools="residue")
    report = share_weights_(layer, mode="hebbian", pools="residue", iterations=300, batch_size=256, gamma=0.0)
    assert report.deviation_after < 1e-2 * report.deviation_before
    torch.testing.assert_close(layer.weight, target.weight, rtol=0, atol=2e-3 * target.weight.abs().max().item())


def test_rate_sleep_with_residue_pools_shares_the_border_positions_too():
    torch.manual_seed(0)
    layer = LocallyConnected2d(2, 3, 3, (8, 8), padding=1)
    before = layer.weight.detach().clone()
    report = share_weights_(layer, mode="rate", pools="residue", iterations=30, batch_size=64, gamma=0.0, alpha=10.0)
    assert report.deviation_after < 0.5 * report.deviation_before
    assert not torch.equal(layer.weight[0, 0], before[0, 0])  # a corner position (reads padding when awake)


def test_residue_snr_and_report_cover_the_borders():
    torch.manual_seed(0)
    layer = LocallyConnected2d(2, 3, 3, (8, 8), padding=1)
    assert find_pools(layer, "residue").num_shared == 64 > find_pools(layer, "paper").num_shared
    before = sharing_snr(layer, pools="residue")
    report = share_weights_(layer, mode="instant", pools="residue")
    assert report.layers[0].shared_positions == 64
    after = sharing_snr(layer, pools="residue")
    assert after["deviation"] < 1e-6 < before["deviation"] and after["snr"] > 1e6 > before["snr"]
