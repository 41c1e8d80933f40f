"""torch.compile traces the LC op (a torch.library custom op) in one graph and trains with eager's numbers.

``backend="aot_eager"`` runs Dynamo and AOTAutograd (the graph capture and the traced backward that
inductor would compile) without inductor's C++ code generation, which takes minutes on a 2-core CPU.
"""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F

import timm_lc  # noqa: F401  (registers the models)
from timm_lc import LocallyConnected2d


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _tiny():
    torch.manual_seed(0)
    model = timm.create_model("lc_resnet_tiny")
    x = torch.randn(2, *model.pretrained_cfg["input_size"])
    return model, x


def test_lc_resnet_is_one_graph_with_no_graph_breaks():
    model, x = _tiny()
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    ops = {str(node.target) for graph in explanation.graphs for node in graph.graph.nodes}
    assert "timm_lc.locally_connected2d.default" in ops


@pytest.mark.parametrize("name", ["lc_resnet18_convstem", "lc_resnet20"])
def test_full_size_families_are_one_graph(name):
    """The ImageNet and CIFAR families at full size, traced on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = timm.create_model(name)
        x = torch.randn(2, *model.pretrained_cfg["input_size"])
    explanation = torch._dynamo.explain(model)(x)
    assert (explanation.graph_break_count, explanation.graph_count) == (0, 1), explanation.break_reasons


def test_compiled_training_matches_eager():
    """Two SGD steps, forward and backward traced with fullgraph=True: eager's losses and weights."""
    model, x = _tiny()
    compiled_model = copy.deepcopy(model)
    compiled = torch.compile(compiled_model, fullgraph=True, backend="aot_eager")
    y = torch.tensor([1, 7])
    results = []
    for net, params in ((model, model.parameters()), (compiled, compiled_model.parameters())):
        optimizer = torch.optim.SGD(params, lr=0.1)
        losses = []
        for _ in range(2):
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        results.append(losses)
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(compiled_model.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_compiled_layer_under_autocast_and_channels_last():
    torch.manual_seed(0)
    lc = LocallyConnected2d(4, 6, 3, (6, 5), stride=2, padding=1, groups=2)
    x = torch.randn(3, 4, 6, 5).to(memory_format=torch.channels_last)
    compiled = torch.compile(lc, fullgraph=True, backend="aot_eager")
    outputs, grads = [], []
    for net in (lc, compiled):
        xg = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(xg)
        out.float().square().sum().backward()
        outputs.append(out)
        grads.append((xg.grad, lc.weight.grad.clone()))
        lc.zero_grad(set_to_none=True)
    assert outputs[1].dtype == torch.bfloat16 and outputs[1].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(outputs[1], outputs[0])
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b)
