"""The lc_resnet family: registry, sizes, architecture, init, conv-checkpoint loading, sleep cfgs."""
import math
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import timm_lc.models  # noqa: F401  (registers the models)
from timm_lc.convert import convert_to_lc
from timm_lc.hub import load_manifest
from timm_lc.layers import LocallyConnected2d
from timm_lc.models import PAPER_SLEEP_CFG, LcResNet, checkpoint_filter_fn, init_lc_kaiming_normal_

EXPECTED = {
    "lc_resnet18", "lc_resnet18_half", "lc_resnet18_convstem", "lc_resnet18_half_convstem", "lc_resnet34",
    "lc_resnet50", "lc_resnet20", "lc_resnet20_tin", "lc_resnet18_hebb", "lc_resnet18_half_hebb",
    "lc_resnet20_hebb", "lc_resnet20_tin_hebb", "lc_resnet_tiny", "lc_resnet_tiny_hebb",
}


def _weights(model):
    """Conv / LC weights only (no BN, no FC), as docs/method.md section 1 counts them."""
    return sum(p.numel() for n, p in model.named_parameters() if p.ndim >= 4)


def _lc_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, LocallyConnected2d)]


def test_registry():
    assert set(timm.list_models(module="lc_resnet")) == EXPECTED
    assert set(timm.list_models("lc_resnet*")) == EXPECTED
    # pretrained tags exist only for the checkpoints this project trained (hub/manifest.json)
    published = {e["model"] for e in load_manifest(Path(__file__).parents[1] / "hub" / "manifest.json")["checkpoints"]}
    assert set(timm.list_models("lc_resnet*", pretrained=True, include_tags=True)) == published


@pytest.mark.parametrize("name, kwargs, millions", [
    # docs/method.md section 1, computed from the reference architectures
    ("lc_resnet20", {}, 40.8),
    ("lc_resnet20", {"keep_first": 1}, 40.4),
    ("lc_resnet20", {"locally_connected": False}, 0.27),
    ("lc_resnet20_tin", {}, 91.8),
    ("lc_resnet20_tin", {"keep_first": 1}, 90.8),
    ("lc_resnet18_half", {}, 482.9),
    ("lc_resnet18_half_convstem", {}, 423.9),
    ("lc_resnet18_half", {"locally_connected": False}, 2.79),
    ("lc_resnet18", {}, 1813.6),
    ("lc_resnet18_convstem", {}, 1695.6),
    ("lc_resnet18", {"locally_connected": False}, 11.2),
])
def test_weight_counts_match_the_paper(name, kwargs, millions):
    model = timm.create_model(name, device="meta", **kwargs)
    digits = 2 if millions < 10 else 1
    assert round(_weights(model) / 1e6, digits) == millions


def test_lc_resnet18_matches_converted_timm_resnet18():
    lc = timm.create_model("lc_resnet18", device="meta")
    converted = convert_to_lc(timm.create_model("resnet18", device="meta"), (3, 224, 224))
    ours, theirs = lc.state_dict(), converted.state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    conv = timm.create_model("lc_resnet18", device="meta", locally_connected=False)
    assert list(conv.state_dict()) == list(timm.create_model("resnet18", device="meta").state_dict())


def test_conv_checkpoint_initialises_lc_model_exactly():
    torch.manual_seed(0)
    conv = timm.create_model("resnet18", num_classes=7).double().eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in conv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    lc = timm.create_model("lc_resnet18", img_size=32, num_classes=7, dtype=torch.float64, pretrained=True,
                           pretrained_cfg_overlay=dict(state_dict=conv.state_dict(), num_classes=7)).eval()
    assert len(_lc_names(lc)) == 20
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(lc(x), conv(x), rtol=1e-9, atol=1e-9)
    # the same through the filter fn directly, into a conv-stem model (stem stays 4-D)
    stem = timm.create_model("lc_resnet18_convstem", img_size=32, num_classes=7, dtype=torch.float64).eval()
    stem.load_state_dict(checkpoint_filter_fn(conv.state_dict(), stem))
    assert isinstance(stem.conv1, nn.Conv2d)
    with torch.no_grad():
        torch.testing.assert_close(stem(x), conv(x), rtol=1e-9, atol=1e-9)


def test_cifar_stem_and_feature_reductions():
    model = timm.create_model("lc_resnet20")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    assert len(model.layer4) == 0  # absent stage
    assert [(f["num_chs"], f["reduction"]) for f in model.feature_info] == [(16, 1), (16, 1), (32, 2), (64, 4)]
    # every conv, 1x1 shortcuts included, is locally connected
    assert not any(isinstance(m, nn.Conv2d) for m in model.modules())
    assert "layer2.0.downsample.0" in _lc_names(model) and len(_lc_names(model)) == 21
    out, feats = model.forward_intermediates(torch.randn(1, 3, 32, 32))
    assert [f.shape[-1] for f in feats] == [32, 32, 16, 8] and out.shape == (1, 64, 8, 8)
    assert model.num_classes == 10 and model.fc.out_features == 10
    tin = timm.create_model("lc_resnet20_tin", device="meta")
    assert tin.img_size == (48, 48) and tin.num_classes == 200 and tin.pretrained_cfg["pool_size"] == (12, 12)


def test_resized_or_rechannelled_model_reports_its_input_size_to_timm():
    from PIL import Image
    for kwargs, size in ((dict(img_size=64), (3, 64, 64)), (dict(in_chans=1), (1, 32, 32)),
                         (dict(img_size=(40, 48), in_chans=1), (1, 40, 48)), ({}, (3, 32, 32))):
        model = timm.create_model("lc_resnet20", **kwargs)
        assert timm.data.resolve_model_data_config(model)["input_size"] == size, kwargs
        assert model.pretrained_cfg is model.default_cfg
    features = timm.create_model("lc_resnet_tiny", img_size=24, in_chans=2, features_only=True)
    assert timm.data.resolve_model_data_config(features)["input_size"] == (2, 24, 24)
    # timm's own eval transform now feeds the model images it accepts
    model = timm.create_model("lc_resnet_tiny", img_size=20).eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    image = transform(Image.new("RGB", (50, 37), (10, 120, 200)))
    assert image.shape == (3, 20, 20) and model(image[None]).shape == (1, 10)


def test_wrong_channels_name_in_chans():
    model = timm.create_model("lc_resnet_tiny", in_chans=1).eval()
    with pytest.raises(ValueError, match=r"got \(2, 3, 16, 16\); build it with in_chans=3 for 3-channel images$"):
        model(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"in_chans=3 for 3-channel images and img_size=\(H, W\)"):
        model(torch.randn(2, 3, 8, 8))


def test_imagenet_stem_and_stage_shapes():
    model = timm.create_model("lc_resnet18_half", device="meta")
    assert model.conv1.kernel_size == (7, 7) and model.conv1.output_size == (112, 112)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert model.layer1[0].conv1.input_size == (56, 56) and model.layer4[1].conv2.output_size == (7, 7)
    assert model.num_features == 256
    bottleneck = timm.create_model("lc_resnet50", device="meta")
    assert bottleneck.num_features == 2048 and bottleneck.layer1[0].conv3.kernel_size == (1, 1)


def test_img_size_builds_any_size_and_wrong_size_is_a_clear_error():
    model = timm.create_model("lc_resnet_tiny", img_size=(12, 20)).eval()
    assert model.conv1.input_size == (12, 20)
    assert timm.data.resolve_input_data_config(model)["input_size"] == (3, 12, 20)  # timm sees the new size
    assert model(torch.randn(2, 3, 12, 20)).shape == (2, 10)
    assert model.forward_features(torch.randn(1, 3, 12, 20)).shape == (1, 32, 3, 5)
    with pytest.raises(ValueError, match=r"\(3, 12, 20\).*got \(2, 3, 16, 16\)"):
        model(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(3, 12, 20\)"):
        model.forward_intermediates(torch.randn(1, 3, 20, 12))
    # the conv baseline is not size-bound
    conv = timm.create_model("lc_resnet_tiny", locally_connected=False).eval()
    assert not _lc_names(conv) and conv(torch.randn(1, 3, 24, 24)).shape == (1, 10)


def test_keep_first_and_convstem_variants():
    model = timm.create_model("lc_resnet_tiny", keep_first=3)
    kept = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert kept == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    stem = timm.create_model("lc_resnet18_half_convstem", device="meta")
    assert isinstance(stem.conv1, nn.Conv2d) and isinstance(stem.layer1[0].conv1, LocallyConnected2d)
    with pytest.raises(ValueError, match="keep_first"):
        timm.create_model("lc_resnet_tiny", keep_first=-1)


def test_device_dtype_meta_and_unknown_kwargs():
    model = timm.create_model("lc_resnet_tiny", dtype=torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model(torch.randn(1, 3, 16, 16, dtype=torch.float64)).dtype == torch.float64
    meta = timm.create_model("lc_resnet18_hebb", device="meta")
    assert {p.device.type for p in list(meta.parameters()) + list(meta.buffers())} == {"meta"}
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        timm.create_model("lc_resnet_tiny", bogus=1)


def test_pretrained_without_weights_is_timms_error():
    with pytest.raises(RuntimeError, match="No pretrained weights exist for lc_resnet_tiny"):
        timm.create_model("lc_resnet_tiny", pretrained=True)


def test_per_position_kaiming_init():
    torch.manual_seed(0)
    model = timm.create_model("lc_resnet20")
    lc = model.layer3[0].conv2  # 64 -> 64, 3x3, at 8x8
    assert lc.bias is None
    expected_std = math.sqrt(2.0 / (64 * 9))  # kaiming normal, fan_out, relu, as timm's ResNet
    assert abs(lc.weight.std().item() / expected_std - 1) < 0.02
    assert abs(lc.weight.mean().item()) < 0.01 * expected_std * 10
    # positions are independent draws, not one kernel copied
    assert not torch.equal(lc.weight[0, 0], lc.weight[3, 5])
    corr = torch.corrcoef(torch.stack([lc.weight[0, 0].flatten(), lc.weight[3, 5].flatten()]))[0, 1]
    assert abs(corr.item()) < 0.1
    # zero_init_last: last BN of each residual branch starts at zero
    assert model.layer1[0].bn2.weight.abs().sum() == 0
    # the helper itself: fan_in mode
    layer = LocallyConnected2d(16, 4, 3, 6, padding=1)
    init_lc_kaiming_normal_(layer, mode="fan_in")
    assert abs(layer.weight.std().item() / math.sqrt(2.0 / (16 * 9)) - 1) < 0.1


def test_sleep_cfgs():
    for name in EXPECTED:
        model = timm.create_model(name, device="meta")
        if name.endswith("_hebb"):
            assert model.sleep_cfg == PAPER_SLEEP_CFG == model.pretrained_cfg["sleep"]
            assert model.sleep_cfg is not model.pretrained_cfg["sleep"]
        else:
            assert model.sleep_cfg is None and "sleep" not in model.pretrained_cfg
    assert PAPER_SLEEP_CFG == dict(every=10, mode="hebbian", pools="paper", iterations=100, batch_size=128,
                                   gamma=1e-5, lr=None, pool_optimizer_state=False)
    features = timm.create_model("lc_resnet_tiny_hebb", features_only=True)
    assert features.pretrained_cfg["sleep"] == PAPER_SLEEP_CFG
    overlay = timm.create_model("lc_resnet_tiny", pretrained_cfg_overlay=dict(sleep=dict(PAPER_SLEEP_CFG, every=1)))
    assert overlay.sleep_cfg["every"] == 1


def test_saved_run_directory_reloads_with_sleep_cfg(tmp_path):
    from timm_lc.hub import save_pretrained

    torch.manual_seed(0)
    model = timm.create_model("lc_resnet_tiny_hebb", num_classes=5).eval()
    save_pretrained(model, tmp_path)
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert isinstance(loaded, LcResNet) and loaded.sleep_cfg == PAPER_SLEEP_CFG
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_direct_construction_validates_stages():
    with pytest.raises(ValueError, match="same length"):
        LcResNet("basic", (1, 1), channels=(8, 16, 32), img_size=16)
    with pytest.raises(ValueError, match="output_stride"):
        LcResNet("basic", (1, 1, 1), channels=(8, 16, 32), img_size=16, stem_width=8, stem_kernel_size=3,
                 stem_stride=1, stem_pool=False, output_stride=32)
    dilated = LcResNet("basic", (1, 1, 1), channels=(8, 16, 32), img_size=16, stem_width=8, stem_kernel_size=3,
                       stem_stride=1, stem_pool=False, output_stride=2, num_classes=3)
    assert dilated.forward_features(torch.randn(1, 3, 16, 16)).shape == (1, 32, 8, 8)
    assert dilated.layer3[0].conv2.dilation == (2, 2)


def test_every_registration_lives_in_models():
    """lc_converted is registered from timm_lc.models (module lc_converted), beside lc_resnet*."""
    assert timm.list_models(module="lc_converted") == ["lc_converted"]
    assert timm.models.is_model_in_modules("lc_converted", ["lc_converted"])
    assert timm.models.get_arch_name("lc_resnet_tiny") == "lc_resnet_tiny"


def test_stages_are_timms_with_the_cifar_stem_scaled():
    """timm's make_blocks builds the stages; the reductions follow this stem (1), not timm's (4)."""
    from timm.models import BasicBlock
    from timm.models.resnet import make_blocks

    kwargs = dict(block="basic", layers=(1, 1, 1), channels=(8, 16, 32), img_size=16, stem_width=8,
                  stem_kernel_size=3, stem_stride=1, stem_pool=False, locally_connected=False)
    dilated = LcResNet(output_stride=2, **kwargs)
    assert [f["reduction"] for f in dilated.feature_info] == [1, 1, 2, 2]
    assert dilated.layer3[0].conv1.dilation == (1, 1) and dilated.layer3[0].conv2.dilation == (2, 2)
    stages, info = make_blocks((BasicBlock,) * 3, (8, 16, 32), (1, 1, 1), 8, output_stride=16)
    ours = LcResNet(**kwargs)
    for name, stage in stages:  # same modules, names and shapes as timm's stages with the ImageNet stem
        assert {k: v.shape for k, v in stage.state_dict().items()} == \
            {k: v.shape for k, v in getattr(ours, name).state_dict().items()}
    assert [f["reduction"] for f in ours.feature_info[1:]] == [r["reduction"] // 4 for r in info]
    with pytest.raises(ValueError, match="at least 2 blocks"):
        LcResNet(block="basic", layers=(1,), channels=(8,), img_size=16)


def test_sleep_settings_have_one_place_for_every_timm_lc_model(tmp_path):
    """pretrained_cfg["sleep"] for lc_resnet* and lc_converted alike; a root key is still read."""
    from timm_lc.hub import save_pretrained
    from timm_lc.run_dir import config_sleep, read_config

    trained = dict(PAPER_SLEEP_CFG, every=3)
    converted = timm.create_model("lc_converted", base="test_resnet", input_size=(3, 16, 16), num_classes=4)
    assert converted.sleep_cfg is None
    save_pretrained(converted, tmp_path / "conv", extra_config={"sleep": trained})
    config = read_config(tmp_path / "conv" / "config.json", "test")
    assert "sleep" not in config and config["pretrained_cfg"]["sleep"] == trained == config_sleep(config)
    reloaded = timm.create_model(f"local-dir:{tmp_path / 'conv'}", pretrained=True)
    assert reloaded.sleep_cfg == trained
    assert config_sleep({"sleep": trained, "pretrained_cfg": {}}) == trained  # a file of an older timm-lc

    plain = timm.create_model("test_resnet", num_classes=4)
    save_pretrained(plain, tmp_path / "plain", extra_config={"sleep": None})  # nothing to record
    assert config_sleep(read_config(tmp_path / "plain" / "config.json", "test")) is None
    with pytest.raises(ValueError, match=r"pretrained_cfg\['sleep'\].*ResNet"):
        save_pretrained(plain, tmp_path / "plain2", extra_config={"sleep": trained})
    assert not (tmp_path / "plain2").exists()


def test_readme_model_table_is_what_the_models_count():
    """Every row of the README's model table: input, classes, conv/LC weights, all parameters and the conv
    net's parameters, recomputed on the meta device."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("| `lc_resnet")]
    assert {n for row in rows for n in row.split("|")[1].replace("`", "").replace(",", " ").split()} == EXPECTED
    for row in rows:
        names, size, classes, weights, total, conv_total = [c.strip() for c in row.strip("|").split("|")]
        for name in names.replace("`", "").split(", "):
            model = timm.create_model(name, device="meta")
            conv = timm.create_model(name, device="meta", locally_connected=False)
            h, w = model.pretrained_cfg["input_size"][1:]
            assert (f"{h}x{w}", int(classes)) == (size, model.num_classes), name
            assert f"{_weights(model) / 1e6:,.1f} M" == weights, name
            assert f"{sum(p.numel() for p in model.parameters()) / 1e6:,.1f} M" == total, name
            assert f"{sum(p.numel() for p in conv.parameters()) / 1e6:.2f} M" == conv_total, name
