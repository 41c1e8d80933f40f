"""conv <-> LC conversion: exactness on timm models, conv subclasses, selection, errors, reports."""
import json
import math

import pytest
import timm
from safetensors.torch import load_file
import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import Conv2dSame, ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame

from timm_lc.convert import (
    convert_to_lc, effective_conv_kernel, lc_conversion_report, lc_to_conv, record_conv_input_sizes,
    register_conv_handler)
from timm_lc.layers import LocallyConnected2d


def _lc_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, LocallyConnected2d)]


def _conv_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", ["resnet18", "tf_efficientnet_b0", "convnext_atto", "regnetx_002"])
def test_timm_models_convert_exactly(name):
    torch.manual_seed(0)
    model = timm.create_model(name).double().eval()
    n_convs = len(_conv_names(model))
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
    convert_to_lc(model, (3, 64, 64))
    assert _conv_names(model) == [] and len(_lc_names(model)) == n_convs
    with torch.no_grad():
        out = model(x)
    assert (out - expected).abs().max().item() < 1e-10 * max(1.0, expected.abs().max().item())
    report = model.lc_conversion_report
    assert report.params_after == sum(p.numel() for p in model.parameters())
    # round trip: every position holds the conv kernel, so averaging restores the conv exactly
    lc_to_conv(model)
    assert _lc_names(model) == [] and len(_conv_names(model)) == n_convs
    with torch.no_grad():
        back = model(x)
    assert (back - expected).abs().max().item() < 1e-12 * max(1.0, expected.abs().max().item())


def test_tf_efficientnet_uses_dynamic_same_padding_and_depthwise():
    # guards that the exactness test above really covers Conv2dSame and depthwise convs
    model = timm.create_model("tf_efficientnet_b0", device="meta")
    same = [n for n, m in model.named_modules() if isinstance(m, Conv2dSame)]
    depthwise = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    assert same and depthwise
    convert_to_lc(model, (3, 64, 64))
    lc = model.get_submodule(same[0])
    assert isinstance(lc, LocallyConnected2d) and lc.padding == "same" and lc.stride == (2, 2)
    assert model.get_submodule(depthwise[0]).groups > 1


class _Subclasses(nn.Module):
    """Every timm conv subclass, stride 2 'same' on a non-square odd input, plus groups and bias."""

    def __init__(self):
        super().__init__()
        self.same = Conv2dSame(3, 8, 3, stride=2)
        self.std = StdConv2d(8, 8, 3, padding=1)
        self.std_same = StdConv2dSame(8, 12, 4, stride=2, padding="same")
        self.scaled = ScaledStdConv2d(12, 12, 3, groups=3)
        self.scaled_same = ScaledStdConv2dSame(12, 6, 3, stride=2, padding="same", bias=True)
        with torch.no_grad():
            self.scaled.gain.uniform_(0.5, 1.5)
            self.scaled_same.bias.normal_()

    def forward(self, x):
        return self.scaled_same(self.scaled(self.std_same(self.std(self.same(x)))))


def test_timm_conv_subclasses_convert_exactly():
    torch.manual_seed(0)
    model = _Subclasses().double()
    assert model.std_same.same_pad and model.scaled_same.same_pad  # dynamic padding really exercised
    x = torch.randn(2, 3, 13, 11, dtype=torch.float64)
    expected = model(x)
    convert_to_lc(model, (3, 13, 11))
    assert len(_lc_names(model)) == 5
    out = model(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_effective_kernel_of_std_conv_is_standardised():
    conv = StdConv2d(4, 6, 3).double()
    kernel, padding = effective_conv_kernel(conv)
    w = conv.weight.detach().reshape(6, -1)
    oracle = (w - w.mean(1, keepdim=True)) / torch.sqrt(w.var(1, unbiased=False, keepdim=True) + conv.eps)
    torch.testing.assert_close(kernel.reshape(6, -1), oracle)
    assert padding == (1, 1)


def test_grouped_depthwise_dilated_and_padding_modes():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=2, padding_mode="reflect"),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, padding_mode="circular"),  # depthwise
        nn.Conv2d(8, 6, (1, 3), padding="same", padding_mode="replicate"),
        nn.Conv2d(6, 6, 2, padding="same"),  # even kernel: asymmetric pads
    ).double()
    x = torch.randn(3, 4, 10, 9, dtype=torch.float64)
    expected = model(x)
    convert_to_lc(model, (4, 10, 9))
    assert len(_lc_names(model)) == 4
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)
    lc_to_conv(model)
    assert len(_conv_names(model)) == 4
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)


def test_lc_to_conv_averages_filters_over_positions():
    torch.manual_seed(0)
    lc = LocallyConnected2d(3, 4, 3, (5, 6), stride=1, padding=1).double()
    torch.nn.init.normal_(lc.weight)
    torch.nn.init.normal_(lc.bias)
    conv = lc_to_conv(lc)
    assert isinstance(conv, nn.Conv2d)
    h, w = lc.output_size
    mean = sum(lc.weight[i, j] for i in range(h) for j in range(w)) / (h * w)  # (C_out, kh, kw, C_in)
    torch.testing.assert_close(conv.weight, mean.permute(0, 3, 1, 2))
    torch.testing.assert_close(conv.bias, lc.bias.mean(dim=(1, 2)))


def test_lc_to_conv_round_trips_stride2_same_padding():
    torch.manual_seed(0)
    model = nn.Sequential(Conv2dSame(3, 5, 3, stride=2)).double()
    x = torch.randn(1, 3, 9, 8, dtype=torch.float64)
    expected = model(x)
    lc_to_conv(convert_to_lc(model, (3, 9, 8)))
    assert isinstance(model[0], Conv2dSame)
    torch.testing.assert_close(model(x), expected)


def _small_resnet_on_meta():
    return timm.create_model("resnet18", device="meta")


def test_selection_keep_first_keep_1x1_include_exclude():
    all_convs = _conv_names(_small_resnet_on_meta())
    assert len(all_convs) == 20
    model = convert_to_lc(_small_resnet_on_meta(), (3, 64, 64), keep_first=1)
    assert isinstance(model.conv1, nn.Conv2d) and len(_lc_names(model)) == 19
    assert model.lc_conversion_report.kept == ["conv1"]

    model = convert_to_lc(_small_resnet_on_meta(), (3, 64, 64), keep_1x1=True)
    shortcuts = [n for n in all_convs if n.endswith("downsample.0")]
    assert len(shortcuts) == 3 and sorted(_conv_names(model)) == sorted(shortcuts)

    model = convert_to_lc(_small_resnet_on_meta(), (3, 64, 64), include="layer4.*")
    assert _lc_names(model) == [n for n in all_convs if n.startswith("layer4.")]

    model = convert_to_lc(_small_resnet_on_meta(), (3, 64, 64), exclude=["conv1", "layer[34].*"])
    assert sorted(_conv_names(model)) == sorted(n for n in all_convs if n == "conv1" or n[:6] in ("layer3", "layer4"))

    with pytest.raises(ValueError, match="keep_first"):
        convert_to_lc(_small_resnet_on_meta(), (3, 64, 64), keep_first=-1)


def test_input_size_recorded_per_conv_and_flags_restored():
    model = timm.create_model("resnet18", device="meta")
    model.train()
    model.layer2.eval()
    sizes = record_conv_input_sizes(model, (3, 64, 48))
    assert sizes["conv1"] == (64, 48)
    assert sizes["layer1.0.conv1"] == (16, 12)  # after the stride-2 stem and max-pool
    assert sizes["layer4.0.downsample.0"] == (4, 3)
    assert model.training and not model.layer2.training and model.layer1.training
    with pytest.raises(ValueError, match="input_size"):
        record_conv_input_sizes(model, (64, 64))


def test_meta_forward_of_real_model_records_same_sizes():
    model = timm.create_model("resnet18")
    assert record_conv_input_sizes(model, (3, 32, 32), on_meta=True) == record_conv_input_sizes(model, (3, 32, 32))


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.shared(self.shared(self.stem(x)))


def test_conv_called_twice_is_a_clear_error_unless_excluded():
    with pytest.raises(ValueError, match=r"'shared'.*more than once"):
        convert_to_lc(_Tied(), (3, 8, 8))
    model = _Tied()
    x = torch.randn(1, 3, 8, 8)
    expected = model(x)
    convert_to_lc(model, (3, 8, 8), exclude="shared")
    assert _lc_names(model) == ["stem"] and isinstance(model.shared, nn.Conv2d)
    torch.testing.assert_close(model(x), expected)


class _Custom(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


def test_unknown_conv_subclass_is_a_type_error_until_registered():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), _Custom(3, 3, 3))
    with pytest.raises(TypeError, match="_Custom"):
        convert_to_lc(model, (3, 6, 6))
    assert _lc_names(model) == []  # nothing half-converted
    convert_to_lc(model, (3, 6, 6), exclude="1")
    assert _lc_names(model) == ["0"]

    class _Doubled(nn.Conv2d):
        def forward(self, x):
            return F.conv2d(x, 2 * self.weight, self.bias, self.stride, self.padding)

    register_conv_handler(_Doubled, lambda conv: (2 * conv.weight, conv.padding))
    model = nn.Sequential(_Doubled(3, 4, 3, padding=1)).double()
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    expected = model(x)
    convert_to_lc(model, (3, 5, 5))
    torch.testing.assert_close(model(x), expected)


def test_report_counts_parameters_without_converting():
    model = timm.create_model("resnet18")
    before = sum(p.numel() for p in model.parameters())
    report = lc_conversion_report(model, (3, 224, 224))
    assert _lc_names(model) == [] and all(p.device.type == "cpu" for p in model.parameters())
    # oracle: each conv's weight repeated at every output position (~1,813.6 M, docs/method.md section 1)
    lc_weights = sum(layer.lc_params for layer in report.layers)
    assert round(lc_weights / 1e6, 1) == 1813.6
    assert report.params_before == before
    assert report.params_added == sum(
        (math.prod(layer.output_size) - 1) * layer.conv_params for layer in report.layers)
    assert report.converted[0] == "conv1" and len(report.converted) == 20
    assert report.layers[0].output_size == (112, 112)
    data = report.to_dict()
    json.dumps(data)
    assert data["params_added"] == report.params_added
    # converting on meta gives the same report
    meta = convert_to_lc(timm.create_model("resnet18", device="meta"), (3, 224, 224))
    assert meta.lc_conversion_report.to_dict() == data
    assert sum(p.numel() for p in meta.parameters()) == report.params_after


def test_noise_init_scatters_around_the_kernel():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, padding=1)
    model = convert_to_lc(nn.Sequential(conv), (4, 6, 6), noise=0.1, generator=torch.Generator().manual_seed(1))
    lc = model[0]
    deviation = lc.weight - conv.weight.detach().permute(0, 2, 3, 1)
    assert deviation.abs().max() > 0
    assert abs(deviation.std().item() / conv.weight.std().item() - 0.1) < 0.02


def test_convert_cli_saves_and_reloads(tmp_path, capsys):
    from timm_lc_cli import main as cli_main
    from timm_lc_cli.convert import main

    out = tmp_path / "lc"
    assert main(["test_resnet", "--input-size", "3", "32", "32", "--output", str(out), "--keep-first", "1",
                 "--exclude", "head*", "--num-classes", "5"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    config = json.loads((out / "config.json").read_text())
    settings = config["lc_conversion"]
    assert settings["keep_first"] == 1 and settings["input_size"] == [3, 32, 32]
    assert settings["report"]["kept"] == ["conv1.0"] and len(settings["report"]["converted"]) == 14
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert len(_lc_names(model)) == len(settings["report"]["converted"])
    assert sum(p.numel() for p in model.parameters()) == settings["report"]["params_after"]
    reference = timm.create_model("test_resnet", num_classes=5).eval()
    convert_to_lc(reference, (3, 32, 32), keep_first=1, exclude="head*")
    reference.load_state_dict(load_file(str(out / "model.safetensors")))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    capsys.readouterr()
    # through the console-script dispatcher: report only, nothing written
    assert cli_main(["convert", "test_resnet", "--input-size", "3", "32", "32", "--report-only"]) == 0
    assert '"params_added"' in capsys.readouterr().out
    assert main(["test_resnet", "--input-size", "3", "32", "32"]) == 2
