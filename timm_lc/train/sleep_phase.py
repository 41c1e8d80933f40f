"""``SleepPhase``: sleep-phase weight sharing as a hook for any Accelerate training loop.

Call ``sleep.step(accelerator, model)`` after every optimiser step. Every ``every`` real
optimiser steps it pauses training and runs ``timm_lc.sharing.share_weights_`` on the unwrapped
model (the paper's sleep phase; the optimiser state is untouched unless ``pool_optimizer_state``,
which averages it over the same pools). Given a ``probe`` (a callable returning a loss), the
loss just before and just after each share is recorded in the report (``loss_before``,
``loss_after``): the sawtooth that sharing draws on the training loss. The sleep noise is seeded by
(seed, step), so a resumed run repeats it exactly. Under DDP the noise-driven sleep (Hebbian,
rate) is split across processes: each computes its share of the layers (balanced by weight
count) and broadcasts them, so the sleep's wall time falls with the number of processes, with
the same result as on one process. Instant sharing (a single pass over the weights) is cheaper
to repeat than to broadcast and runs on every process. All processes end the sleep bitwise
identical: before it, parameters are fingerprinted across processes (any mismatch is repaired
by a broadcast from process 0, with a warning), and buffers (BatchNorm statistics, which DDP
lets drift between forwards) are broadcast from process 0.
FSDP, DeepSpeed and Megatron shard the LC weights, which the sleep must see whole: refused.
"""
import os
import time
import warnings
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from timm_lc_settings.sleep import SleepConfig

from ..sharing.report import SharingReport
from .seeding import derive_seed

__all__ = ["SleepPhase"]

SYNC = ("check", "broadcast", "none")
_SHARDED = ("FSDP", "DEEPSPEED", "MEGATRON_LM")


def _refuse_sharded(distributed_type: Any) -> None:
    name = str(getattr(distributed_type, "value", distributed_type) or "").upper()
    if name in _SHARDED:
        raise RuntimeError(
            f"SleepPhase does not support {name}: the sleep phase needs every process to hold the full "
            f"locally connected weights, which {name} shards. Launch with plain data parallelism instead "
            f"(accelerate launch --multi_gpu, e.g. recipes/accelerate/multi_gpu.yaml).")


def _launch_distributed_types() -> List[str]:
    """The distributed types named by the launch environment and an initialised Accelerate state."""
    from accelerate.state import PartialState
    found = [name for env, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED"))
             if os.environ.get(env, "").lower() in ("1", "true", "yes")]
    known = PartialState._shared_state.get("distributed_type")
    if known is not None:
        found.append(str(getattr(known, "value", known)))
    return found


_FINGERPRINT_CHUNK = 1 << 22  # elements per int64 chunk: bounded extra memory even for GB-sized LC weights


def _fingerprint(t: torch.Tensor) -> torch.Tensor:
    """An int64 checksum of a tensor's bits (position weighted), for cheap cross-process equality checks."""
    flat = t.detach().reshape(-1)
    if flat.is_floating_point():
        int_type = {2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()]
        flat = flat.view(int_type)
    total = torch.zeros(2, dtype=torch.int64, device=flat.device)
    for start in range(0, flat.numel(), _FINGERPRINT_CHUNK):
        chunk = flat[start:start + _FINGERPRINT_CHUNK].to(torch.int64)
        weights = torch.arange(start, start + chunk.numel(), device=flat.device, dtype=torch.int64) % 7919 + 1
        total += torch.stack([chunk.sum(), (chunk * weights).sum()])
    return total


def _layer_owners(module: nn.Module, processes: int) -> Dict[str, int]:
    """Which process sleeps each LC layer (module order): greedy balance of the weight counts."""
    from timm_lc.sharing.metrics import lc_layers
    layers = lc_layers(module)
    load = [0] * processes
    owners = {}
    for name, layer in sorted(layers, key=lambda item: -item[1].weight.numel()):
        rank = min(range(processes), key=lambda r: (load[r], r))
        owners[name] = rank
        load[rank] += layer.weight.numel()
    return {name: owners[name] for name, _ in layers}


def _unwrap(model: nn.Module) -> nn.Module:
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


class SleepPhase:
    """Runs sleep-phase weight sharing every ``every`` optimiser steps (see module docstring).

    Args:
        every: optimiser steps between sleep phases.
        mode: ``"hebbian"`` (the paper's anti-Hebbian sleep), ``"instant"`` (pool means) or ``"rate"``.
        pools: ``"paper"`` (k^2 pools of interior positions per channel), ``"residue"`` (k^2 pools of
            all positions, borders included: the reference's instant sharing) or ``"full"``
            (all positions: exact convolution).
        iterations, batch_size, gamma, lr: Hebbian sleep settings (``lr=None``: fan-in normalised);
            all the sleep settings are validated, and kept, as one ``SleepConfig`` (``self.settings``).
        pool_optimizer_state: at every share also average the optimiser's state tensors shaped like an
            LC weight over the same pools (pass the optimiser to ``step``); off in the reference.
        seed: base seed; the noise of the sleep after step ``s`` is seeded by ``(seed, s)``.
        sync: under multi-process runs, before each sleep ``"check"`` fingerprints parameters across
            processes and repairs mismatches, ``"broadcast"`` always broadcasts them from process 0,
            ``"none"`` trusts DDP. Buffers are broadcast from process 0 after the sleep unless
            ``sync="none"``; the layers of a split sleep are always broadcast from their process.
        **options: further ``share_weights_`` options (e.g. the rate dynamics' ``alpha``, ``tau``).
    """

    def __init__(self, every: int = 10, mode: str = "hebbian", pools: str = "paper", iterations: int = 100,
                 batch_size: int = 128, gamma: float = 1e-5, lr: Optional[float] = None,
                 pool_optimizer_state: bool = False, seed: int = 0, sync: str = "check", **options: Any):
        try:
            settings = SleepConfig(every=every, mode=mode, pools=pools, iterations=iterations,
                                   batch_size=batch_size, gamma=gamma, lr=lr,
                                   pool_optimizer_state=pool_optimizer_state, options=options)
        except ValueError as err:
            raise ValueError(f"SleepPhase: {err}") from None
        if sync not in SYNC:
            raise ValueError(f"SleepPhase: expected sync in {SYNC}, got {sync!r}")
        for distributed_type in _launch_distributed_types():
            _refuse_sharded(distributed_type)
        self.settings = settings
        self.seed, self.sync = int(seed), sync
        self.num_updates = 0  # real optimiser steps seen
        self.num_sleeps = 0
        self.sleep_time = 0.0  # seconds spent asleep, in total

    @classmethod
    def from_settings(cls, settings: SleepConfig, seed: int = 0, sync: str = "check") -> "SleepPhase":
        """A SleepPhase with the settings of a ``SleepConfig``.

        Args:
            settings: the sleep settings.
            seed: base seed of the sleep noise.
            sync: ``"check"``, ``"broadcast"`` or ``"none"`` (see the class docstring).

        Returns:
            The new ``SleepPhase``.
        """
        return cls(**settings.to_dict(), seed=seed, sync=sync)

    every = property(lambda self: self.settings.every, doc="optimiser steps between sleep phases")
    mode = property(lambda self: self.settings.mode, doc="sharing mode")
    pools = property(lambda self: self.settings.pools, doc="sharing pools")
    iterations = property(lambda self: self.settings.iterations, doc="Hebbian iterations per sleep")
    batch_size = property(lambda self: self.settings.batch_size, doc="noise patches per Hebbian iteration")
    gamma = property(lambda self: self.settings.gamma, doc="Hebbian anchor strength")
    lr = property(lambda self: self.settings.lr, doc="Hebbian step size (None: fan-in normalised)")
    pool_optimizer_state = property(lambda self: self.settings.pool_optimizer_state,
                                    doc="whether each share also pools the optimiser state")
    options = property(lambda self: dict(self.settings.options), doc="further share_weights_ options")

    @classmethod
    def from_model(cls, model: nn.Module, **overrides: Any) -> "SleepPhase":
        """A SleepPhase with a ``_hebb`` model's settings (``model.sleep_cfg``); ``None`` overrides are ignored.

        Args:
            model: the model, possibly wrapped (DDP, ``torch.compile``); its ``sleep_cfg``, else its
                pretrained cfg's ``sleep``, gives the settings.
            **overrides: ``SleepPhase`` arguments that replace the model's settings.

        Returns:
            The new ``SleepPhase``.

        Raises:
            ValueError: if the model carries no sleep settings, or a setting is invalid.
        """
        inner = _unwrap(model)
        cfg = getattr(inner, "sleep_cfg", None)
        if cfg is None:
            cfg = (getattr(inner, "pretrained_cfg", None) or {}).get("sleep")
        if cfg is None:
            name = (getattr(inner, "pretrained_cfg", None) or {}).get("architecture", type(inner).__name__)
            raise ValueError(f"model {name!r} carries no sleep settings (sleep_cfg is None): use a *_hebb model "
                             f"or construct SleepPhase(every=..., mode=...) directly")
        kwargs = dict(cfg)
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    def config(self) -> Dict[str, Any]:
        """The settings plus the seed, as stored in a checkpoint's state.

        Returns:
            The ``SleepConfig`` fields as a dict, with ``seed``.
        """
        return {**self.settings.to_dict(), "seed": self.seed}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def step(self, accelerator, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
             probe: Optional[Callable[[], float]] = None) -> Optional[SharingReport]:
        """Counts a real optimiser step and sleeps when one is due.

        Micro-steps of gradient accumulation (``accelerator.sync_gradients`` False) and optimiser
        steps skipped by the fp16 grad scaler are not counted.

        Args:
            accelerator: the run's ``Accelerator``.
            model: the (prepared) model.
            optimizer: the (prepared) optimiser; required when ``pool_optimizer_state`` is on.
            probe: returns the training loss of the current weights (e.g. on the current batch, without
                side effects); called just before and just after the share.

        Returns:
            The ``SharingReport`` of the sleep (``loss_before``/``loss_after`` set with a probe), or None.
        """
        _refuse_sharded(accelerator.distributed_type)
        if not accelerator.sync_gradients or accelerator.optimizer_step_was_skipped:
            return None
        self.num_updates += 1
        if self.num_updates % self.every:
            return None
        return self.sleep(accelerator, model, optimizer=optimizer, probe=probe)

    @torch.no_grad()
    def sleep(self, accelerator, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
              probe: Optional[Callable[[], float]] = None) -> SharingReport:
        """Runs one sleep phase now (seeded by the current step) and synchronises the processes.

        The noise is seeded by ``(seed, num_updates)``; the time spent is added to ``sleep_time``.

        Args:
            accelerator: the run's ``Accelerator``.
            model: the (prepared) model; its unwrapped module is shared in place.
            optimizer: the (prepared) optimiser; required when ``pool_optimizer_state`` is on.
            probe: returns the training loss of the current weights; called just before and just after the share.

        Returns:
            The ``SharingReport`` of the sleep (``loss_before``/``loss_after`` set with a probe).

        Raises:
            ValueError: if ``pool_optimizer_state`` is on and no optimiser is given.
            RuntimeError: under FSDP, DeepSpeed or Megatron-LM, which shard the weights.
        """
        from timm_lc.sharing import pool_optimizer_state_, share_with_
        _refuse_sharded(accelerator.distributed_type)
        if self.pool_optimizer_state and optimizer is None:
            raise ValueError("SleepPhase(pool_optimizer_state=True) needs the optimiser: call "
                             "sleep.step(accelerator, model, optimizer=optimizer)")
        loss_before = probe() if probe is not None else None
        module = accelerator.unwrap_model(model, keep_torch_compile=False)
        start = time.perf_counter()
        processes = accelerator.num_processes
        if processes > 1 and self.sync != "none":
            self._synchronise_parameters(accelerator, module)
        owners = _layer_owners(module, processes) if processes > 1 and self.mode != "instant" else None
        mine = None if owners is None else [n for n, rank in owners.items() if rank == accelerator.process_index]
        report = share_with_(module, self.settings, seed=derive_seed(self.seed, self.num_updates), layers=mine)
        if owners is not None:
            self._gather_split(accelerator, module, owners, report)
        if self.pool_optimizer_state:  # every process pools every layer: the same arithmetic everywhere
            pool_optimizer_state_(optimizer, module, self.pools)
        if processes > 1 and self.sync != "none":
            import torch.distributed as dist
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)
        self.sleep_time += time.perf_counter() - start
        self.num_sleeps += 1
        if probe is not None:
            report.loss_before, report.loss_after = loss_before, probe()
        return report

    @staticmethod
    def _gather_split(accelerator, module: nn.Module, owners: Dict[str, int], report) -> None:
        """Broadcasts every layer from the process that slept it; collects all layer reports."""
        import torch.distributed as dist
        from accelerate.utils import gather_object
        layers = dict(module.named_modules())
        for name, rank in owners.items():
            dist.broadcast(layers[name].weight.data, src=rank)
        order = {name: i for i, name in enumerate(owners)}
        report.layers = sorted(gather_object(report.layers), key=lambda layer: order[layer.name])

    def _synchronise_parameters(self, accelerator, module: nn.Module) -> None:
        import torch.distributed as dist
        params = [p for p in module.parameters()]
        if self.sync == "broadcast":
            mismatched = params
        else:
            local = torch.stack([_fingerprint(p) for p in params]).to(accelerator.device)
            gathered = accelerator.gather(local[None])  # (processes, params, 2)
            differs = (gathered != gathered[:1]).any(0).any(1)
            mismatched = [p for p, bad in zip(params, differs.tolist()) if bad]
            if mismatched:
                warnings.warn(f"SleepPhase: {len(mismatched)} parameter tensors differed across processes before "
                              f"the sleep at step {self.num_updates}; broadcasting them from process 0")
        for tensor in mismatched:
            dist.broadcast(tensor.data, src=0)

    def state_dict(self) -> Dict[str, Any]:
        """Counters and settings, for ``accelerator.register_for_checkpointing(sleep)``.

        Returns:
            ``num_updates``, ``num_sleeps``, ``sleep_time`` and ``config`` (see ``config``).
        """
        return {"num_updates": self.num_updates, "num_sleeps": self.num_sleeps, "sleep_time": self.sleep_time,
                "config": self.config()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores the counters of ``state_dict``, warning when the saved settings differ from these.

        Args:
            state: a ``state_dict`` result; the settings in use are kept either way.
        """
        saved = state.get("config")
        if saved is not None and saved != self.config():
            warnings.warn(f"SleepPhase: resuming with settings {self.config()} differing from the checkpoint's {saved}")
        self.num_updates = int(state["num_updates"])
        self.num_sleeps = int(state.get("num_sleeps", 0))
        self.sleep_time = float(state.get("sleep_time", 0.0))
