"""The Triton LC kernels against the oracles of test_layers, and the LC kernel selection.

On the CPU the kernels run in Triton's interpreter, which needs ``TRITON_INTERPRET=1`` before
``triton`` is first imported: ``triton.jit`` reads it (``triton.knobs.runtime.interpret``) when it
decorates a function, and triton's own library functions (``tl.zeros``, ...) are decorated when
triton is imported, which ``import timm_lc`` (through torch / timm) already does. So the
``test_interpreted_*`` tests run only in a process started with the variable set:
``test_kernels_in_triton_interpreter`` runs them in one such pytest subprocess. The CUDA tests
(``-k cuda``) run the compiled kernels against the gather path.
"""
import copy
import os
import subprocess
import sys
import warnings

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")

from test_layers import CASES, CASE_IDS, make_pair, naive_lc  # noqa: E402

import timm_lc  # noqa: E402
from timm_lc.studies import cuda_checks  # noqa: E402
from timm_lc.layers import LocallyConnected2d, filters_to_kernel, first_use, get_lc_kernel, kernels, \
    select_kernel, set_lc_kernel  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted_only = pytest.mark.skipif(
    not INTERPRETED, reason="runs in the TRITON_INTERPRET=1 subprocess of test_kernels_in_triton_interpreter")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or INTERPRETED, reason="needs CUDA (compiled kernels)")

# (in, out, kernel, stride, padding, dilation, groups, input_size, padding_mode): tiny, as interpreted
# kernels cost about a millisecond per Triton op and program
SMALL_CASES = [
    (3, 4, 3, 1, 1, 1, 1, (4, 5), "zeros"),  # stride 1, padding 1, non-square
    (4, 4, 3, 2, 1, 1, 1, (5, 6), "zeros"),  # stride 2
    (3, 4, 3, 1, "same", 2, 1, (5, 4), "zeros"),  # dilation 2, 'same'
    (2, 3, (3, 2), (2, 1), "same", (1, 2), 1, (5, 4), "reflect"),  # non-square kernel / stride / dilation
    (4, 6, 3, 1, 0, 1, 2, (5, 5), "zeros"),  # groups 2, no padding
    (2, 2, 3, 1, 1, 1, 2, (3, 4), "zeros"),  # depthwise
    (4, 4, 1, 2, 0, 1, 1, (5, 5), "zeros"),  # 1x1 stride-2 shortcut
]
SMALL_IDS = ["s1p1", "s2", "d2same", "nonsquare", "g2p0", "depthwise", "1x1s2"]


@pytest.mark.skipif(INTERPRETED, reason="this process is the interpreter run")
def test_kernels_in_triton_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "interpreted"],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"interpreted kernel tests failed:\n{result.stdout[-8000:]}\n{result.stderr[-2000:]}"
    assert " passed" in result.stdout and " failed" not in result.stdout


@pytest.fixture(autouse=True)
def default_selection(monkeypatch):
    """Each test starts from ``auto`` with no TIMM_LC_KERNEL, and leaves the selection as it found it."""
    monkeypatch.setattr(kernels, "_selected", None)
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)


@pytest.fixture
def interpreted():
    """The interpreted kernel module, selected."""
    module = kernels.triton_kernels()
    assert module.INTERPRETED
    set_lc_kernel("triton")
    return module


def make_lc(case, seed=0):
    """An fp32 LC layer for ``case`` with its own random filter and bias at every position."""
    cin, cout, k, s, p, d, g, size, mode = case
    torch.manual_seed(seed)
    return LocallyConnected2d(cin, cout, k, size, s, p, d, g, padding_mode=mode)


def grads(out, inputs, grad):
    return torch.autograd.grad(out, inputs, grad)


@interpreted_only
@pytest.mark.parametrize("case", SMALL_CASES, ids=SMALL_IDS)
def test_interpreted_forward_and_gradients_match_naive_loop(case, interpreted):
    lc = make_lc(case)
    x = torch.randn(2, case[0], *case[7], requires_grad=True)
    assert select_kernel(x, lc.groups) == "triton"
    out = lc(x)
    ref = naive_lc(x, lc)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    for a, b in zip(grads(out, (x, lc.weight, lc.bias), grad), grads(ref, (x, lc.weight, lc.bias), grad)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@interpreted_only
@pytest.mark.parametrize("case", [SMALL_CASES[1], SMALL_CASES[2]], ids=["s2", "d2same"])
def test_interpreted_matches_conv_with_copied_kernels(case, interpreted):
    conv, lc = make_pair(case, dtype=torch.float32)
    x = torch.randn(3, case[0], *case[7])
    xc, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected, out = conv(xc), lc(xl)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    expected.backward(grad)
    out.backward(grad)
    torch.testing.assert_close(xl.grad, xc.grad, rtol=1e-5, atol=1e-5)
    # one shared kernel: its gradient is the sum of the positions' filter gradients
    torch.testing.assert_close(filters_to_kernel(lc.weight.grad.sum((0, 1))), conv.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lc.bias.grad.sum((1, 2)), conv.bias.grad, rtol=1e-4, atol=1e-4)


@interpreted_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_interpreted_low_precision_matches_fp32(dtype, interpreted):
    lc = make_lc(SMALL_CASES[0])
    lc_low = copy.deepcopy(lc).to(dtype)
    with torch.no_grad():  # the same (rounded) values in both precisions
        lc.weight.copy_(lc_low.weight)
        lc.bias.copy_(lc_low.bias)
    x = torch.randn(2, 3, 4, 5).to(dtype)
    xl, xf = x.clone().requires_grad_(), x.float().requires_grad_()
    out, ref = lc_low(xl), naive_lc(xf, lc)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=5e-2)
    grad = torch.randn_like(ref).to(dtype)
    ours = grads(out, (xl, lc_low.weight, lc_low.bias), grad)
    theirs = grads(ref, (xf, lc.weight, lc.bias), grad.float())
    for a, b in zip(ours, theirs):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b, rtol=2e-2, atol=5e-2)


@interpreted_only
def test_interpreted_autocast_fp16(interpreted):
    lc = make_lc(SMALL_CASES[0])
    x = torch.randn(2, 3, 4, 5)
    with torch.autocast("cpu", dtype=torch.float16):
        out = lc(x)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), naive_lc(x, lc), rtol=2e-2, atol=5e-2)
    out.float().sum().backward()
    assert lc.weight.grad.dtype == torch.float32 and torch.isfinite(lc.weight.grad).all()


def test_kernel_names_and_exports():
    assert kernels.KERNELS == ("auto", "triton", "gather")
    assert timm_lc.set_lc_kernel is set_lc_kernel and timm_lc.get_lc_kernel is get_lc_kernel
    assert get_lc_kernel() == "auto"
    for name in kernels.KERNELS:
        set_lc_kernel(name)
        assert get_lc_kernel() == name


def test_environment_variable_is_the_initial_choice(monkeypatch):
    monkeypatch.setenv("TIMM_LC_KERNEL", "gather")
    assert get_lc_kernel() == "gather"
    assert select_kernel(torch.zeros(1, 2, 3, 3), 1) == "gather"
    set_lc_kernel("auto")  # an explicit choice wins over the variable
    assert get_lc_kernel() == "auto"


def test_unknown_names_are_value_errors(monkeypatch):
    with pytest.raises(ValueError, match="'fast'.*auto, triton, gather"):
        set_lc_kernel("fast")
    assert get_lc_kernel() == "auto"
    monkeypatch.setenv("TIMM_LC_KERNEL", "cudnn")
    lc = LocallyConnected2d(2, 2, 3, (4, 4))
    with pytest.raises(ValueError, match="TIMM_LC_KERNEL.*'cudnn'.*auto, triton, gather"):
        lc(torch.randn(1, 2, 4, 4))


def test_auto_on_the_cpu_is_gather():
    x = torch.zeros(1, 4, 5, 5)
    assert select_kernel(x, 1) == "gather"
    assert select_kernel(x, 2) == "gather"


@interpreted_only
def test_interpreted_kernels_are_never_picked_by_auto():
    assert kernels.triton_kernels().INTERPRETED
    test_auto_on_the_cpu_is_gather()


@pytest.mark.skipif(INTERPRETED, reason="needs compiled kernels")
def test_triton_on_cpu_tensors_needs_the_interpreter():
    set_lc_kernel("triton")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        LocallyConnected2d(2, 2, 3, (4, 4))(torch.randn(1, 2, 4, 4))


def test_triton_rejects_unsupported_dtypes():
    set_lc_kernel("triton")
    lc = LocallyConnected2d(2, 2, 3, (4, 4), dtype=torch.float64)
    with pytest.raises(ValueError, match="float64 is not supported"):
        lc(torch.randn(1, 2, 4, 4, dtype=torch.float64))


@interpreted_only
def test_interpreted_backward_uses_the_kernel_of_its_forward(interpreted, monkeypatch):
    calls = []
    for name in ("lc_input_grad", "lc_weight_grad"):
        kernel = getattr(interpreted, name)
        monkeypatch.setattr(interpreted, name, lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    lc = make_lc(SMALL_CASES[0])
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    out = lc(x)
    set_lc_kernel("gather")
    out.sum().backward()
    assert sorted(calls) == ["lc_input_grad", "lc_weight_grad"]
    expected = x.detach().clone().requires_grad_()
    naive_lc(expected, lc).sum().backward()
    torch.testing.assert_close(x.grad, expected.grad, rtol=1e-5, atol=1e-5)


@pytest.fixture
def auto_on_cpu(monkeypatch):
    """``auto`` tries the interpreted kernels on CPU tensors (the documented seam), with no verdict yet."""
    module = kernels.triton_kernels()
    assert module.INTERPRETED
    monkeypatch.setattr(kernels, "auto_tries_triton", lambda x: kernels.triton_unusable(x) is None)
    first_use.clear_first_use_checks()
    yield module
    first_use.clear_first_use_checks()


def _two_layer_training(steps=3):
    """Final parameters and losses of a few SGD steps of two LC layers of one geometry (one check)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(LocallyConnected2d(3, 3, 3, (4, 5), padding=1), torch.nn.ReLU(),
                                LocallyConnected2d(3, 3, 3, (4, 5), padding=1), torch.nn.Flatten(),
                                torch.nn.Linear(60, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(3, 3, 4, 5), torch.tensor([0, 1, 3])
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return [p.detach().clone() for p in model.parameters()], losses


def _run_auto(steps=3):
    """(parameters, losses, warnings) of the two-layer training under ``auto``."""
    set_lc_kernel("auto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        params, losses = _two_layer_training(steps)
    return params, losses, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def _gather_reference():
    set_lc_kernel("gather")
    return _two_layer_training()


def _count_calls(module, monkeypatch):
    calls = []
    for name in ("lc_forward", "lc_input_grad", "lc_weight_grad"):
        kernel = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    return calls


@interpreted_only
def test_interpreted_auto_trusts_kernels_that_pass_the_first_use_check(auto_on_cpu, monkeypatch):
    calls = _count_calls(auto_on_cpu, monkeypatch)
    params, losses, caught = _run_auto()
    assert caught == []
    (verdict,) = first_use.first_use_checks().values()  # both layers share one geometry: one check
    assert verdict["kernel"] == "triton" and verdict["error"] is None and verdict["check_s"] > 0
    # the check's forward is the first layer's first output; then 2 layers x 3 steps, minus that one
    assert calls.count("lc_forward") == 6 and calls.count("lc_weight_grad") == 1 + 6
    ref_params, ref_losses = _gather_reference()
    torch.testing.assert_close(losses, ref_losses, rtol=1e-5, atol=1e-5)
    for a, b in zip(params, ref_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@interpreted_only
@pytest.mark.parametrize("fault", ["raises", "wrong_values"])
def test_interpreted_auto_falls_back_to_gather_once_per_geometry(fault, auto_on_cpu, monkeypatch):
    if fault == "raises":
        def broken(*args):
            raise RuntimeError("triton launch failed: out of resources\n(second line of the report)")
        monkeypatch.setattr(auto_on_cpu, "lc_input_grad", broken)
        expected = "RuntimeError: triton launch failed: out of resources"
    else:
        weight_grad = auto_on_cpu.lc_weight_grad
        monkeypatch.setattr(auto_on_cpu, "lc_weight_grad", lambda *a: weight_grad(*a) * 1.5)
        expected = "weight gradient differs from gather by 0.5 "
    params, losses, caught = _run_auto()
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "\n" not in message and expected in message and "gather" in message
    assert "LC layer 3->3 channels, kernel 3x3, input 4x5" in message and "torch.float32" in message
    (verdict,) = first_use.first_use_checks().values()
    assert verdict["kernel"] == "gather" and expected in verdict["error"]
    ref_params, ref_losses = _gather_reference()  # training went on with gather: the same numbers
    assert losses == ref_losses
    for a, b in zip(params, ref_params):
        assert torch.equal(a, b)


@interpreted_only
def test_interpreted_named_triton_is_never_checked_and_raises(auto_on_cpu, monkeypatch):
    def broken(*args):
        raise RuntimeError("triton launch failed")
    monkeypatch.setattr(auto_on_cpu, "lc_forward", broken)
    set_lc_kernel("triton")
    with pytest.raises(RuntimeError, match="triton launch failed"):
        LocallyConnected2d(3, 3, 3, (4, 5), padding=1)(torch.randn(2, 3, 4, 5))
    assert first_use.first_use_checks() == {}


@interpreted_only
def test_interpreted_doctor_reports_the_first_use_decision(auto_on_cpu):
    from timm_lc.studies.bench.layer import LayerShape
    from timm_lc.studies.doctor import first_use_decision
    report = first_use_decision(LayerShape("tiny", 2, 4, 5), "cpu")
    assert report["kernel"] == "triton" and report["error"] is None
    assert "LC layer 4->4 channels, kernel 3x3, input 5x5" in report["geometry"] and "torch.bfloat16" in report["geometry"]
    assert report["check_ms"] > 0 and report["step_ms"] > 0 and report["check_over_step"] > 0


def test_doctor_says_when_auto_does_not_check():
    from timm_lc.studies.bench.layer import LayerShape
    from timm_lc.studies.doctor import first_use_decision
    report = first_use_decision(LayerShape("tiny", 2, 4, 5), "cpu")
    assert report["decision"].startswith("no check: auto does not try triton here")


def test_first_use_mismatch_measures_the_relative_max_error():
    ref = torch.tensor([1.0, -2.0, 4.0])
    assert first_use.mismatch([("forward", ref + 1e-6, ref)], torch.float32) is None
    assert "forward differs from gather by 0.25 " in first_use.mismatch([("forward", ref + 1, ref)], torch.float32)
    assert first_use.mismatch([("forward", ref + 0.05, ref)], torch.bfloat16) is None  # 0.0125 < 0.03
    nan = torch.tensor([float("nan"), -2.0, 4.0])
    assert "input gradient is not finite" in first_use.mismatch([("forward", ref, ref), ("input gradient", nan, ref)],
                                                                torch.float16)
    assert first_use.mismatch([("forward", nan, nan)], torch.float32) is None  # non-finite in both: compared elsewhere


@needs_cuda
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cuda_triton_matches_gather(case):
    cuda_checks.check_triton_matches_gather(case)


@needs_cuda
@pytest.mark.parametrize("dtype", cuda_checks.LOW_PRECISIONS)
def test_cuda_triton_low_precision_and_many_tiles(dtype):
    """Channels, batch and positions over several tiles, none a multiple of a block size."""
    cuda_checks.check_triton_low_precision(dtype)


@needs_cuda
def test_cuda_auto_picks_triton():
    cuda_checks.check_auto_picks_triton()


def test_doctor_without_cuda_is_one_line_and_status_2(monkeypatch, tmp_path, capsys):
    import timm_lc_cli
    from timm_lc_cli import doctor
    assert timm_lc_cli.COMMANDS["doctor"][0] == "timm_lc_cli.doctor"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    output = tmp_path / "doctor.json"
    assert doctor.main(["--device", "cuda", "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA" in err
    assert not output.exists()
