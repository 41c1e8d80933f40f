"""The SleepPhase hook: schedule, seeding, plumbing into share_weights_, checkpoint state, refusals."""
import copy
from types import SimpleNamespace

import pytest
import timm
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

import timm_lc.models  # noqa: F401
from timm_lc.sharing import share_weights_
from timm_lc.train import SleepPhase
from timm_lc.train.seeding import derive_seed


def _model(name="lc_resnet_tiny_hebb"):
    torch.manual_seed(0)
    return timm.create_model(name)


def _lc_weights(model):
    return [m.weight.detach().clone() for m in model.modules() if type(m).__name__ == "LocallyConnected2d"]


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


def test_from_model_takes_the_models_settings():
    model = _model()
    sleep = SleepPhase.from_model(model, every=3, seed=7, mode=None)
    expected = dict(model.sleep_cfg, every=3)
    assert {k: getattr(sleep, k) for k in ("every", "mode", "pools", "iterations", "batch_size", "gamma", "lr")} \
        == {k: expected[k] for k in ("every", "mode", "pools", "iterations", "batch_size", "gamma", "lr")}
    assert sleep.seed == 7 and sleep.mode == "hebbian"


def test_from_model_without_settings_is_an_error():
    with pytest.raises(ValueError, match="no sleep settings"):
        SleepPhase.from_model(_model("lc_resnet_tiny"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(every=0), "every"), (dict(every=2.5), "every"), (dict(mode="dream"), "mode"),
    (dict(pools="some"), "pools"), (dict(iterations=0), "iterations"), (dict(gamma=-1.0), "gamma"),
    (dict(sync="maybe"), "sync")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SleepPhase(**kwargs)


def test_sleeps_every_n_steps_with_seed_derived_from_step(accelerator):
    model = _model()
    oracle = copy.deepcopy(model)
    sleep = SleepPhase(every=3, mode="hebbian", iterations=4, batch_size=16, seed=5)
    reports = [sleep.step(accelerator, model) for _ in range(7)]
    assert [r is not None for r in reports] == [False, False, True, False, False, True, False]
    # the same as calling share_weights_ directly with the seeds (5, 3) and (5, 6)
    for step in (3, 6):
        share_weights_(oracle, mode="hebbian", pools="paper", iterations=4, batch_size=16, gamma=1e-5,
                       seed=derive_seed(5, step))
    assert all(torch.equal(a, b) for a, b in zip(_lc_weights(model), _lc_weights(oracle)))
    assert reports[2].deviation_after < reports[2].deviation_before
    assert sleep.num_sleeps == 2 and sleep.num_updates == 7 and sleep.sleep_time > 0


def test_different_seeds_give_different_sleeps(accelerator):
    a, b = _model(), _model()
    SleepPhase(every=1, iterations=3, batch_size=8, seed=0).step(accelerator, a)
    SleepPhase(every=1, iterations=3, batch_size=8, seed=1).step(accelerator, b)
    assert not all(torch.equal(x, y) for x, y in zip(_lc_weights(a), _lc_weights(b)))


def test_micro_steps_and_skipped_steps_are_not_counted(accelerator):
    model = _model()
    before = _lc_weights(model)
    sleep = SleepPhase(every=1, mode="instant")
    accelerator.gradient_state._set_sync_gradients(False)
    try:
        assert sleep.step(accelerator, model) is None
    finally:
        accelerator.gradient_state._set_sync_gradients(True)
    skipped = SimpleNamespace(sync_gradients=True, optimizer_step_was_skipped=True,
                              distributed_type=DistributedType.NO)
    assert sleep.step(skipped, model) is None
    assert sleep.num_updates == 0
    assert all(torch.equal(a, b) for a, b in zip(before, _lc_weights(model)))


def test_state_dict_resumes_exactly(accelerator):
    a, b = _model(), _model()
    first = SleepPhase(every=3, iterations=3, batch_size=8, seed=2)
    for _ in range(4):
        first.step(accelerator, a)
    resumed = SleepPhase(every=3, iterations=3, batch_size=8, seed=2)
    resumed.load_state_dict(first.state_dict())
    b.load_state_dict(a.state_dict())
    for _ in range(2):
        ra, rb = first.step(accelerator, a), resumed.step(accelerator, b)
        assert (ra is None) == (rb is None)
    assert rb is not None and resumed.num_updates == 6 and resumed.num_sleeps == 2
    assert all(torch.equal(x, y) for x, y in zip(_lc_weights(a), _lc_weights(b)))


def test_sharded_training_is_refused(monkeypatch):
    fsdp = SimpleNamespace(sync_gradients=True, optimizer_step_was_skipped=False,
                           distributed_type=DistributedType.FSDP)
    with pytest.raises(RuntimeError, match="FSDP"):
        SleepPhase(every=1).step(fsdp, _model())
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(RuntimeError, match="DEEPSPEED"):
        SleepPhase(every=1)
