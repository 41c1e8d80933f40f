"""What timm's own tests/test_models.py checks of every timm model, run on the lc_resnet family.

Forward / backward / cfg / features / intermediates / TorchScript / fx run on the small
variants at their own (fixed) input sizes; the big ones are built on the meta device only.
"""
import math

import pytest
import timm
import torch
from timm.layers import get_notrace_functions, get_notrace_modules, set_scriptable
from timm.models import FeatureInfo
from timm.models import create_feature_extractor, get_graph_node_names

import timm_lc.models  # noqa: F401  (registers the models)

SMALL = ["lc_resnet_tiny", "lc_resnet20", "lc_resnet_tiny_hebb"]
ALL = sorted(timm.list_models(module="lc_resnet"))


def _input(model, batch_size=1):
    cfg = model.pretrained_cfg
    assert cfg["fixed_input_size"]
    return torch.randn(batch_size, *cfg["input_size"])


@pytest.mark.parametrize("name", SMALL)
def test_model_forward(name):
    model = timm.create_model(name, pretrained=False).eval()
    out = model(_input(model, 2))
    assert out.shape == (2, model.num_classes) and not torch.isnan(out).any()


@pytest.mark.parametrize("name", SMALL)
def test_model_backward(name):
    model = timm.create_model(name, pretrained=False, num_classes=42).train()
    num_params = sum(p.numel() for p in model.parameters())
    out = model(_input(model, 2))
    out.mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, f"No gradient for {n}"
    assert sum(p.grad.numel() for p in model.parameters()) == num_params
    assert out.shape[-1] == 42 and not torch.isnan(out).any()


@pytest.mark.parametrize("name", SMALL)
def test_model_default_cfgs(name):
    model = timm.create_model(name, pretrained=False).eval()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    cfg = model.pretrained_cfg
    state_dict = model.state_dict()
    pool_size = cfg["pool_size"]
    x = _input(model)
    feats = model.forward_features(x)
    pre = model.forward_head(feats, pre_logits=True)
    assert tuple(feats.shape[-2:]) == tuple(pool_size) and feats.shape[1] == model.num_features
    assert pre.shape[1] == model.head_hidden_size

    model.reset_classifier(0)
    out = model(x)
    assert out.ndim == 2 and out.shape == pre.shape
    model.reset_classifier(0, "")
    out = model(x)
    assert out.ndim == 4 and tuple(out.shape[-2:]) == tuple(pool_size)
    model.reset_classifier(7, None)  # keeps the pool ('' now)
    assert model.global_pool.pool_type == "" and model.get_classifier().out_features == 7
    model.reset_classifier(5, "avg")
    assert model(x).shape == (1, 5)

    headless = timm.create_model(name, pretrained=False, num_classes=0, global_pool="").eval()
    out = headless(x)
    assert out.ndim == 4 and tuple(out.shape[-2:]) == tuple(pool_size)

    for c in (cfg["classifier"],) if isinstance(cfg["classifier"], str) else cfg["classifier"]:
        assert c + ".weight" in state_dict
    for fc in (cfg["first_conv"],) if isinstance(cfg["first_conv"], str) else cfg["first_conv"]:
        assert fc + ".weight" in state_dict


@pytest.mark.parametrize("name", ALL)
def test_model_default_cfgs_meta(name):
    """Every model, big ones included, built on meta: cfg consistent with the architecture."""
    model = timm.create_model(name, device="meta")
    cfg = model.pretrained_cfg
    assert cfg["fixed_input_size"] and cfg["architecture"] == name and "hf_hub_id" not in cfg
    assert tuple(cfg["input_size"]) == (model.in_chans, *model.img_size)
    state_dict = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state_dict and cfg["classifier"] + ".weight" in state_dict
    assert model.fc.out_features == cfg["num_classes"]
    reduction = model.feature_info[-1]["reduction"]
    assert tuple(cfg["pool_size"]) == tuple(s // reduction for s in model.img_size)
    last_stage = getattr(model, f"layer{model.num_stages}")
    assert tuple(last_stage[-1].conv2.output_size) == tuple(cfg["pool_size"])  # the LC layers' own geometry
    assert model.group_matcher()["stem"] and model.group_matcher(coarse=True)["blocks"] == r"^layer(\d+)"


@pytest.mark.parametrize("name", SMALL)
def test_model_forward_intermediates(name):
    model = timm.create_model(name, pretrained=False).eval()
    info = FeatureInfo(model.feature_info, range(len(model.feature_info)))
    channels, reductions = info.channels(), info.reduction()
    assert len(channels) >= 3
    x = _input(model, 2)
    out, intermediates = model.forward_intermediates(x)
    assert len(intermediates) == len(channels)
    for c, r, o in zip(channels, reductions, intermediates):
        assert o.shape[1] == c and o.shape[0] == 2
        assert o.shape[-2] <= math.ceil(x.shape[-2] / r) + 1 and o.shape[-1] <= math.ceil(x.shape[-1] / r) + 1
    assert torch.allclose(out, model.forward_features(x))
    only = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [o.shape for o in only] == [o.shape for o in intermediates[-2:]]
    model.set_grad_checkpointing()
    out2, _ = model.forward_intermediates(x)
    assert torch.allclose(out, out2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SMALL)
def test_model_grad_checkpointing_matches(name):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).train()
    x = _input(model, 2)
    ref = model(x)
    ref.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", SMALL)
def test_model_prune_intermediate_layers(name):
    model = timm.create_model(name, pretrained=False).eval()
    x = _input(model)
    full = model.forward_intermediates(x, intermediates_only=True)
    kept = model.prune_intermediate_layers(indices=[1, 2])
    assert kept == [1, 2] and len(model.layer3) == 0 and model.num_classes == 0
    assert model.num_features == model.feature_info[2]["num_chs"]
    pruned = model.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
    for a, b in zip(pruned, full[1:3]):
        torch.testing.assert_close(a, b)
    assert model(x).shape == full[2].shape  # head and pooling pruned too


@pytest.mark.parametrize("name", SMALL)
def test_model_forward_features(name):
    model = timm.create_model(name, pretrained=False, features_only=True).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 4
    x = _input(model)
    outputs = model(x)
    assert len(outputs) == len(channels)
    for c, r, o in zip(channels, reductions, outputs):
        assert o.shape[1] == c and o.shape[-1] == math.ceil(x.shape[-1] / r) and not torch.isnan(o).any()
    picked = timm.create_model(name, features_only=True, out_indices=(1, 3))
    assert [o.shape[1] for o in picked(x)] == [channels[1], channels[3]]


def _scriptable_model(name):
    """A scriptable eval-mode model, an input and its eager output."""
    with set_scriptable(True):
        model = timm.create_model(name, pretrained=False)
    model.eval()
    x = _input(model)
    with torch.no_grad():
        return model, x, model(x)


@pytest.mark.parametrize("name", SMALL)
def test_model_forward_torchscript(name):
    model, x, expected = _scriptable_model(name)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        out = scripted(x)
    assert out.shape[0] == 1 and not torch.isnan(out).any()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def _create_fx_model(model):
    """timm's fx feature extractor (its tracer treats timm's notrace modules, LC included, as leaves)."""
    assert any(m.__name__ == "LocallyConnected2d" for m in get_notrace_modules())
    assert any(getattr(f, "__name__", "") == "_check_image_size" for f in get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(model)
    return create_feature_extractor(model, [train_nodes[-1] if model.training else eval_nodes[-1]])


@pytest.mark.parametrize("name", SMALL)
def test_model_forward_fx(name):
    model = timm.create_model(name, pretrained=False).eval()
    x = _input(model)
    with torch.no_grad():
        expected = model(x)
        out = tuple(_create_fx_model(model)(x).values())[0]
    assert torch.equal(out, expected)


@pytest.mark.parametrize("name", SMALL)
def test_model_forward_fx_torchscript(name):
    """timm's own test: fx-trace (scriptable layers), then TorchScript the traced graph."""
    model, x, expected = _scriptable_model(name)
    scripted = torch.jit.script(_create_fx_model(model))
    with torch.inference_mode():
        out = tuple(scripted(x).values())[0]
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="input size"):  # the scripted size check still refuses other sizes
        scripted(torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("name", SMALL)
def test_model_backward_fx(name):
    model = timm.create_model(name, pretrained=False, num_classes=42).train()
    num_params = sum(p.numel() for p in model.parameters())
    fx_model = _create_fx_model(model)
    out = tuple(fx_model(_input(model, 2)).values())[0]
    out.mean().backward()
    grads = [p.grad for p in fx_model.parameters()]
    assert all(g is not None for g in grads) and sum(g.numel() for g in grads) == num_params
    assert out.shape[-1] == 42


def test_fx_feature_extractor_wrapper():
    model = timm.create_model("lc_resnet_tiny", features_only=True, feature_cls="fx").eval()
    outputs = model(torch.randn(1, 3, 16, 16))
    assert [o.shape[1] for o in outputs] == model.feature_info.channels()
