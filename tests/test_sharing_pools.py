"""Pools against a brute-force oracle: tile real noise, unfold it, group identical patches."""
import pytest
import torch
import torch.nn.functional as F

from timm_lc.layers import LocallyConnected2d, filters_to_kernel
from test_layers import pad_input
from timm_lc.sharing import find_pools, pool_ids, share_weights_, sharing_snr


def tiled_noise(batch, channels, kernel_size, input_size, generator=None):
    """(B, C, H, W) image of k x k noise patches tiled with period k, and the patches themselves."""
    kh, kw = kernel_size
    xi = torch.randn(batch, channels, kh, kw, generator=generator)
    rows = torch.arange(input_size[0]) % kh
    cols = torch.arange(input_size[1]) % kw
    return xi[:, :, rows][:, :, :, cols], xi


def oracle_pools(layer):
    """Interior positions grouped by identical noise patches; -1 for positions sharing with nobody."""
    image, _ = tiled_noise(1, layer.in_channels, layer.kernel_size, layer.input_size,
                           torch.Generator().manual_seed(123))
    kw = dict(kernel_size=layer.kernel_size, dilation=layer.dilation, stride=layer.stride)
    patches = F.unfold(pad_input(layer, image.double()), **kw)[0].t()  # (L, C*kh*kw)
    inside = F.unfold(pad_input(layer, torch.ones(1, 1, *layer.input_size, dtype=torch.double)), **kw)[0].all(0)
    ids = torch.full((patches.shape[0],), -1)
    next_id = 0
    for i in range(patches.shape[0]):
        if not inside[i] or ids[i] >= 0:
            continue
        same = inside & (patches == patches[i]).all(1)
        if same.sum() >= 2:
            ids[same] = next_id
            next_id += 1
    return ids.view(layer.output_size)


def same_partition(a, b):
    a, b = a.flatten(), b.flatten()
    return torch.equal(a[:, None] == a[None, :], b[:, None] == b[None, :]) and torch.equal(a < 0, b < 0)


GEOMETRIES = [
    dict(kernel_size=3, input_size=(10, 13), padding=1),
    dict(kernel_size=3, input_size=(11, 9), stride=2, padding=1),
    dict(kernel_size=3, input_size=(12, 10), dilation=2, padding=2),
    dict(kernel_size=(3, 2), input_size=(9, 11), stride=(1, 2), padding=(1, 0)),
    dict(kernel_size=5, input_size=(17, 14), stride=3, padding=2),
    dict(kernel_size=3, input_size=(13, 12), dilation=3, padding=0),  # dilation shares a factor with k
    dict(kernel_size=4, input_size=(15, 16), stride=2, padding="same"),  # asymmetric pads
    dict(kernel_size=7, input_size=(40, 36), stride=2, padding=3),  # an ImageNet-style stem
    dict(kernel_size=1, input_size=(6, 5), stride=2),
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_paper_pools_are_positions_seeing_identical_noise(geometry):
    layer = LocallyConnected2d(2, 1, bias=False, **geometry)
    assert same_partition(pool_ids(layer, "paper"), oracle_pools(layer))


def test_paper_pools_of_the_cifar_layer_are_residue_classes():
    layer = LocallyConnected2d(1, 1, 3, (32, 32), padding=1)
    ids = pool_ids(layer)
    assert (ids[0] == -1).all() and (ids[-1] == -1).all() and (ids[:, 0] == -1).all() and (ids[:, -1] == -1).all()
    inner = ids[1:-1, 1:-1]
    assert torch.equal(inner[3:], inner[:-3]) and torch.equal(inner[:, 3:], inner[:, :-3])
    assert len(find_pools(layer)) == 9 and inner.unique().numel() == 9


def test_full_pools_hold_every_position():
    layer = LocallyConnected2d(2, 3, 3, (7, 6), padding=1)
    pools = find_pools(layer, "full")
    assert len(pools) == 1 and pools.num_shared == 42
    assert (pool_ids(layer, "full") == 0).all()


def test_circular_padding_of_a_multiple_of_k_keeps_borders_in_the_tiling():
    layer = LocallyConnected2d(1, 1, 3, (12, 9), padding=1, padding_mode="circular")
    assert (pool_ids(layer) >= 0).all() and len(find_pools(layer)) == 9


def test_bad_pool_mode():
    with pytest.raises(ValueError, match="pools must be one of"):
        find_pools(LocallyConnected2d(1, 1, 3, 5), "rows")
    with pytest.raises(TypeError, match="expected a LocallyConnected2d"):
        find_pools(torch.nn.Conv2d(1, 1, 3))


@pytest.mark.parametrize("pools,shift", [("paper", 3), ("full", 1)])
def test_shared_layer_is_translation_equivariant(pools, shift):
    """After sharing, translating the input by the pool period translates the output (padding 0)."""
    torch.manual_seed(0)
    layer = LocallyConnected2d(2, 3, 3, (11, 10), bias=False)
    share_weights_(layer, "instant", pools=pools)
    x = torch.randn(2, 2, 11, 10)
    with torch.no_grad():
        y, y_h, y_w = layer(x), layer(x.roll(shift, 2)), layer(x.roll(shift, 3))
    torch.testing.assert_close(y_h[:, :, shift:], y[:, :, :-shift])
    torch.testing.assert_close(y_w[:, :, :, shift:], y[:, :, :, :-shift])
    if pools == "paper":  # and only by the period: a one-pixel shift does not commute
        with torch.no_grad():
            y1 = layer(x.roll(1, 2))
        assert not torch.allclose(y1[:, :, 1:], y[:, :, :-1], atol=1e-3)


def test_instant_paper_sets_each_pool_to_its_mean_and_leaves_borders():
    torch.manual_seed(0)
    layer = LocallyConnected2d(4, 6, 3, (9, 11), stride=2, padding=1, groups=2)
    before = layer.weight.detach().clone().double()
    report = share_weights_(layer, "instant")
    ids = oracle_pools(layer).flatten()
    w = layer.weight.detach().double().flatten(0, 1)
    flat_before = before.flatten(0, 1)
    for pool in ids.unique():
        members = ids == pool
        if pool < 0:
            assert torch.equal(w[members], flat_before[members])
        else:
            torch.testing.assert_close(w[members], flat_before[members].mean(0).expand_as(w[members]),
                                       rtol=1e-6, atol=1e-7)
    assert report.deviation_after < 1e-6 < report.deviation_before


def test_instant_full_on_an_lc_layer_is_the_conv_with_the_mean_kernel():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, stride=2, bias=False)
    layer = LocallyConnected2d.from_conv(conv, (9, 8), noise=0.5)
    mean_kernel = filters_to_kernel(layer.weight.detach().double().mean((0, 1))).float()
    share_weights_(layer, "instant", pools="full")
    x = torch.randn(2, 3, 9, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.conv2d(x, mean_kernel, stride=2, padding=1), rtol=1e-5, atol=1e-5)


def test_instant_full_recovers_the_conv_exactly_from_a_conv_init():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, bias=False)
    layer = LocallyConnected2d.from_conv(conv, (8, 8))
    share_weights_(layer, "instant", pools="full")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-6)


def test_full_pools_of_a_single_position_share_nothing():
    """A 1x1 output has no pool partner: no pool, so no zero-variance pool inflates the SNR."""
    lc = LocallyConnected2d(2, 2, 3, (3, 3))
    assert lc.output_size == (1, 1) and len(find_pools(lc, "full")) == 0
    assert sharing_snr(lc, pools="full") == {"snr": None, "deviation": None, "layers": {}}
