"""LocallyConnected2d against independent oracles: nn.Conv2d with copied kernels and a naive loop."""
import pytest
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame, create_feature_extractor

from timm_lc import LocallyConnected2d
from timm_lc.layers import filters_to_kernel, kernel_to_filters, lc_function, locally_connected2d
from timm_lc.studies.cuda_checks import CASE_IDS, CASES, check_matches_cpu  # the geometries every check covers


def make_pair(case, dtype=torch.float64, seed=0):
    cin, cout, k, s, p, d, g, size, mode = case
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(cin, cout, k, s, p, d, g, bias=True, padding_mode=mode, dtype=dtype)
    return conv, LocallyConnected2d.from_conv(conv, size)


def pad_input(lc, x):
    """The padded input an LC layer's filters see (its pads in its padding mode)."""
    return F.pad(x, lc.pads, mode="constant" if lc.padding_mode == "zeros" else lc.padding_mode)


def naive_lc(x, lc):
    """Independent oracle: an explicit loop over output positions, each with its own filter."""
    x = pad_input(lc, x)
    kh, kw = lc.kernel_size
    (sh, sw), (dh, dw) = lc.stride, lc.dilation
    cg, og = lc.in_channels // lc.groups, lc.out_channels // lc.groups
    out = x.new_zeros(x.shape[0], lc.out_channels, *lc.output_size)
    for h in range(lc.output_size[0]):
        for w in range(lc.output_size[1]):
            patch = x[:, :, h * sh: h * sh + dh * (kh - 1) + 1: dh, w * sw: w * sw + dw * (kw - 1) + 1: dw]
            for gi in range(lc.groups):
                filt = lc.weight[h, w, gi * og:(gi + 1) * og]  # (og, kh, kw, cg)
                block = patch[:, gi * cg:(gi + 1) * cg]  # (b, cg, kh, kw)
                out[:, gi * og:(gi + 1) * og, h, w] = torch.einsum("bcuv,ouvc->bo", block, filt)
    if lc.bias is not None:
        out = out + lc.bias
    return out


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_conv_with_copied_kernel(case):
    conv, lc = make_pair(case)
    x = torch.randn(2, case[0], *case[7], dtype=torch.float64)
    expected = conv(x)
    out = lc(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.fixture(params=["one_chunk", "row_chunks"])
def lc_path(request, monkeypatch):
    """Runs a test with all output rows in one chunk and with one chunk per output row."""
    monkeypatch.setattr(lc_function, "CHUNK_BYTES", 2 ** 40 if request.param == "one_chunk" else 1)
    return request.param


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_and_gradients_match_naive_loop(case, lc_path):
    _, lc = make_pair(case)
    with torch.no_grad():  # every position its own filter and bias
        lc.weight.add_(torch.randn_like(lc.weight))
        lc.bias.add_(torch.randn_like(lc.bias))
    x = torch.randn(3, case[0], *case[7], dtype=torch.float64, requires_grad=True)
    out = lc(x)
    ref = naive_lc(x, lc)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, (x, lc.weight, lc.bias), grad)
    theirs = torch.autograd.grad(ref, (x, lc.weight, lc.bias), grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [CASES[1], CASES[3]], ids=["dense", "depthwise"])
def test_gradcheck(case):
    _, lc = make_pair(case)
    with torch.no_grad():
        lc.weight.add_(torch.randn_like(lc.weight))
    x = torch.randn(2, case[0], *case[7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w, b: torch.func.functional_call(lc, {"weight": w, "bias": b}, (a,)),
                                    (x, lc.weight, lc.bias))


@pytest.mark.parametrize("cin,cout,k,size,stride,padding,groups", [
    (2, 4, 3, (4, 3), 2, 1, 2),  # strided, grouped
    (2, 2, 2, (3, 4), 1, (1, 0), 1),  # even kernel, uneven padding
], ids=["strided_grouped", "even_kernel"])
def test_double_backward_gradgradcheck(cin, cout, k, size, stride, padding, groups):
    torch.manual_seed(0)
    lc = LocallyConnected2d(cin, cout, k, size, stride=stride, padding=padding, groups=groups, dtype=torch.float64)
    x = torch.randn(2, cin, *size, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, w, b: torch.func.functional_call(lc, {"weight": w, "bias": b}, (a,)),
                                        (x, lc.weight, lc.bias))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_gradient_penalty_matches_naive_loop(memory_format):
    """create_graph=True: a penalty on the input gradient's norm trains as the naive loop's does."""
    _, lc = make_pair(CASES[2])
    with torch.no_grad():
        lc.weight.add_(torch.randn_like(lc.weight))
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64).to(memory_format=memory_format)

    def penalty_grads(forward):
        xg = x.clone().requires_grad_()
        out = forward(xg)
        (grad_x,) = torch.autograd.grad(out.square().sum(), xg, create_graph=True)
        return torch.autograd.grad(out.sum() + grad_x.square().sum(), (xg, lc.weight, lc.bias))

    for a, b in zip(penalty_grads(lc), penalty_grads(lambda a: naive_lc(a, lc))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_custom_ops_pass_opcheck():
    """Schema, fake (meta) implementation and autograd registration of both ops, by torch's own checker."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 3, 6, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, 3, 3, dtype=torch.float64, requires_grad=True)
    conf = ([1, 1, 1, 1], [2, 2], [1, 1], 2, "gather")
    torch.library.opcheck(torch.ops.timm_lc.locally_connected2d.default, (x, weight, bias, *conf))
    torch.library.opcheck(torch.ops.timm_lc.locally_connected2d.default,
                          (x.detach().to(memory_format=torch.channels_last), weight, None, *conf))
    grad_out = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.timm_lc.locally_connected2d_backward.default,
                          (grad_out, x, weight, *conf, True, True))


def test_position_uses_only_its_own_filter():
    lc = LocallyConnected2d(2, 3, 3, (6, 5), padding=1, bias=False, dtype=torch.float64)
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64)
    base = lc(x)
    with torch.no_grad():
        lc.weight[2, 3].mul_(-7.0)
    changed = (lc(x) - base).abs().amax(dim=(0, 1)) > 0
    expected = torch.zeros(6, 5, dtype=torch.bool)
    expected[2, 3] = True
    assert torch.equal(changed, expected)


def test_backward_does_not_keep_unfolded_patches():
    lc = LocallyConnected2d(8, 8, 3, (16, 16), padding=1)
    x = torch.randn(4, 8, 16, 16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        lc(x)
    activations = [t.numel() for t in saved if t.data_ptr() != lc.weight.data_ptr()]
    assert sum(activations) <= 4 * 8 * 18 * 18  # the padded input, once
    assert len(activations) < len(saved)  # the weight is saved by reference, not copied


@pytest.mark.parametrize("groups", [1, 2])
def test_backward_leaves_input_and_saved_tensors_intact(groups, lc_path):
    """1x1 stride-1 patches are a view of the input: backward must not write into them."""
    lc = LocallyConnected2d(4, 4, 1, (5, 5), groups=groups, dtype=torch.float64)
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    before = x.detach().clone()
    out = lc(x)
    first = torch.autograd.grad(out.sum(), (x, lc.weight), retain_graph=True)
    second = torch.autograd.grad(out.sum(), (x, lc.weight))  # the saved input is still valid
    assert torch.equal(x.detach(), before)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast(dtype):
    _, lc = make_pair(CASES[1], dtype=torch.float32)
    x = torch.randn(2, 4, 8, 8)
    with torch.autocast("cpu", dtype=dtype):
        out = lc(x)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), lc(x), rtol=5e-2, atol=5e-2)
    out.float().sum().backward()
    assert lc.weight.grad.dtype == torch.float32 and torch.isfinite(lc.weight.grad).all()


def test_channels_last_input_and_output():
    conv, lc = make_pair(CASES[0], dtype=torch.float32)
    x = torch.randn(2, 3, 7, 9).to(memory_format=torch.channels_last)
    out = lc(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, conv(x), rtol=1e-5, atol=1e-5)
    xg = x.detach().requires_grad_()
    lc(xg).sum().backward()
    xr = x.detach().contiguous().requires_grad_()
    lc(xr).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)


def test_unbatched_input():
    conv, lc = make_pair(CASES[0])
    x = torch.randn(3, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(lc(x), conv(x))


@pytest.mark.parametrize("shape,expected_in_message", [
    ((2, 4, 7, 9), "(N, 3, 7, 9)"),  # wrong channels
    ((2, 3, 8, 9), "got (2, 3, 8, 9)"),  # wrong height
    ((2, 3, 7, 10), "got (2, 3, 7, 10)"),  # wrong width
])
def test_wrong_input_shape_is_a_clear_value_error(shape, expected_in_message):
    _, lc = make_pair(CASES[0])
    with pytest.raises(ValueError) as err:
        lc(torch.randn(*shape, dtype=torch.float64))
    assert expected_in_message in str(err.value)
    assert "(N, 3, 7, 9)" in str(err.value)


def test_same_padding_with_stride_matches_timm_conv2d_same():
    torch.manual_seed(0)
    conv = Conv2dSame(3, 4, 3, stride=2).double()
    lc = LocallyConnected2d.from_conv(conv, (9, 10), padding="same")
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64)
    torch.testing.assert_close(lc(x), conv(x))


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 1, 1, 1), (2, (1, 0), 1, 2), (1, "same", 2, 1), (1, "valid", (1, 2), 1), ((2, 1), 2, 1, 4),
])
def test_functional_op_takes_conv2d_arguments(stride, padding, dilation, groups):
    """locally_connected2d(x, w, b, stride, padding, dilation, groups) is F.conv2d with a copied kernel."""
    torch.manual_seed(0)
    kernel = torch.randn(8, 4 // groups, 3, 3, dtype=torch.float64)
    bias = torch.randn(8, dtype=torch.float64)
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    expected = F.conv2d(x, kernel, bias, stride, padding, dilation, groups)
    ho, wo = expected.shape[-2:]
    weight = kernel_to_filters(kernel).expand(ho, wo, *kernel_to_filters(kernel).shape).contiguous()
    out = locally_connected2d(x, weight, bias[:, None, None].expand(8, ho, wo).contiguous(),
                              stride=stride, padding=padding, dilation=dilation, groups=groups)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_functional_op_names_the_weight_it_expects():
    with pytest.raises(ValueError, match=r"needs a weight of shape \(7, 7, C_out, 3, 3, 4\), got \(6, 6, 2, 3, 3, 4\)"):
        locally_connected2d(torch.randn(1, 4, 7, 7), torch.randn(6, 6, 2, 3, 3, 4), padding=1)
    with pytest.raises(ValueError, match="4-D input"):
        locally_connected2d(torch.randn(4, 7, 7), torch.randn(7, 7, 2, 3, 3, 4), padding=1)


@pytest.mark.parametrize("kwargs,match", [
    (dict(groups=3), "divisible by groups"),
    (dict(padding_mode="mirror"), "padding_mode"),
    (dict(padding="full"), "padding must be"),
    (dict(input_size=(2, 2), padding=0), "too small"),
])
def test_bad_arguments(kwargs, match):
    args = dict(in_channels=4, out_channels=4, kernel_size=3, input_size=(8, 8), padding=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LocallyConnected2d(**args)


def test_attributes_and_repr():
    lc = LocallyConnected2d(4, 8, 3, (10, 12), stride=2, padding=1, groups=2, bias=False)
    assert lc.output_size == (5, 6)
    assert lc.weight.shape == (5, 6, 8, 3, 3, 2)
    assert lc.bias is None and "bias" in lc._parameters and lc.fan_in == 18  # registered as None, like Conv2d
    assert repr(lc) == ("LocallyConnected2d(4, 8, kernel_size=(3, 3), input_size=(10, 12), stride=(2, 2), "
                        "padding=(1, 1), groups=2, bias=False)")
    assert [n for n, _ in lc.named_parameters()] == ["weight"]


def test_default_init_is_per_position_kaiming():
    torch.manual_seed(0)
    lc = LocallyConnected2d(16, 32, 3, (8, 8), padding=1)
    bound = 1 / (16 * 9) ** 0.5
    assert lc.weight.abs().max() <= bound
    assert abs(lc.weight.std().item() - bound / 3 ** 0.5) < 0.02 * bound
    assert not torch.equal(lc.weight[0, 0], lc.weight[1, 1])  # positions are independent


def test_conv_init_with_noise():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    lc = LocallyConnected2d.from_conv(conv, (12, 12), noise=0.1)
    kernel = kernel_to_filters(conv.weight.detach())
    deviation = lc.weight.detach() - kernel
    assert abs(deviation.std().item() - 0.1 * conv.weight.std().item()) < 0.01 * conv.weight.std().item()
    assert deviation.mean(dim=(0, 1)).abs().max() < 0.05 * conv.weight.abs().max()
    torch.testing.assert_close(filters_to_kernel(lc.weight.mean(dim=(0, 1))), conv.weight.detach(),
                               atol=0.02, rtol=0)


def test_meta_device_construction_is_lazy():
    lc = LocallyConnected2d(512, 512, 3, (224, 224), padding=1, device="meta")
    assert lc.weight.is_meta and lc.weight.numel() == 224 * 224 * 512 * 512 * 9


def test_torchscript_matches_eager():
    conv, lc = make_pair(CASES[2], dtype=torch.float32)
    scripted = torch.jit.script(lc)
    x = torch.randn(2, 4, 9, 8)
    torch.testing.assert_close(scripted(x), lc(x))
    xs = x.clone().requires_grad_()
    scripted(xs).sum().backward()
    xe = x.clone().requires_grad_()
    lc(xe).sum().backward()
    torch.testing.assert_close(xs.grad, xe.grad)


def test_fx_feature_extraction_treats_layer_as_leaf():
    _, lc = make_pair(CASES[0], dtype=torch.float32)
    model = torch.nn.Sequential(lc, torch.nn.ReLU(), torch.nn.Flatten())
    extractor = create_feature_extractor(model, return_nodes={"0": "lc", "1": "act"})
    x = torch.randn(2, 3, 7, 9)
    feats = extractor(x)
    torch.testing.assert_close(feats["lc"], lc(x))
    torch.testing.assert_close(feats["act"], F.relu(lc(x)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cuda_matches_cpu(case):
    check_matches_cpu(case)
