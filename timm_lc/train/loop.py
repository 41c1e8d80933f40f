"""The Accelerate training loop behind ``timm-lc train`` and ``python -m timm_lc.train``.

``train(cfg)`` reads like Accelerate's example: ``setup`` resolves the config (image size,
precision) and builds data, model (timm), optimiser and scheduler (timm's factories), optional EMA
and the ``SleepPhase`` hook into a ``Job``; ``train_epoch``, ``evaluate`` and ``checkpoint`` advance
one small ``State``; ``finish`` saves. It trains with Accelerate (DDP, mixed precision, gradient accumulation,
trackers), evaluating, logging and checkpointing on the way, and finally writes the run
directory: ``model.safetensors`` + timm ``config.json`` (loadable with
``timm.create_model("local-dir:RUN")``), ``metrics.jsonl``, ``plots/``, ``recipe.yaml`` and
``checkpoints/``. Everything that can fail at the start (config, model, data, memory) is checked
before the output directory is touched. It prints a start line and one line per epoch; the progress
bar (stderr) appears only when stdout and stderr are terminals. Ctrl-C stops after the step in
progress (with its sleep and checkpoint; a second Ctrl-C stops at once) by raising
``KeyboardInterrupt``. A run resumed from a checkpoint ends bitwise identical to an uninterrupted one.
"""
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..layers import LocallyConnected2d
from ..run_dir import (
    CHECKPOINTS_DIR, METRICS_NAME, PLOTS_DIR, RECIPE_NAME, holds_run, remove_run_files, save_pretrained)
from ..sharing import sharing_snr
from .checkpoint import latest_checkpoint, load_checkpoint, remove_partial_checkpoints, save_checkpoint
from timm_lc_settings.train import TrainConfig

from .resolve import resolve_config, save_config, trackers_for
from .data import build_data, build_eval_loader, build_train_loader
from .evaluate import evaluate_accuracy
from .interrupt import DeferredInterrupt
from ..figures import plot_metrics
from .metrics import MetricsWriter
from .sleep_phase import SleepPhase

__all__ = ["train", "create_run_model", "build_sleep", "resolve_output_dir", "check_memory", "holds_run",
           "remove_run_files", "RunExistsError"]


class RunExistsError(FileExistsError):
    """The output directory already holds a run and neither --resume nor --overwrite was given."""


def resolve_output_dir(cfg: TrainConfig) -> Path:
    """``cfg.output_dir`` or ``runs/<run name>`` (the recipe's name, ``demo`` for the default).

    Args:
        cfg: the run configuration.

    Returns:
        The run directory (not created here).
    """
    return Path(cfg.output_dir or Path("runs") / (cfg.name or "demo"))


def _check_output_dir(cfg: TrainConfig, out: Path) -> None:
    """Refuses a start that would clobber a run or resume nothing; reads, never writes."""
    if cfg.resume:
        if latest_checkpoint(out) is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint in {str(out / CHECKPOINTS_DIR)!r}; "
                                    f"start a new run (without --resume, or with --overwrite)")
    elif holds_run(out) and not cfg.overwrite:
        raise RunExistsError(f"output directory {str(out)!r} already holds a run: pass --resume to continue it, "
                             f"--overwrite to replace it, or --output-dir DIR for a new one")


def create_run_model(cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """``timm.create_model(cfg.model, ...)`` sized for the data (``img_size`` only for a registered fixed-size
    architecture; an ``hf-hub:`` / ``local-dir:`` checkpoint keeps the size its config.json records).

    Args:
        cfg: the run configuration (``model``, ``num_classes``, ``model_kwargs``, which override the rest).
        num_classes: the data's class count, used unless ``cfg.num_classes`` is set.
        in_chans: the data's image channels.
        img_size: the data's image size.

    Returns:
        The new model (random or checkpoint weights, as ``cfg.model`` names them).
    """
    import timm
    from timm.models import get_pretrained_cfg, parse_model_name, split_model_name_tag
    import timm_lc.models  # noqa: F401  (registers the lc_resnet* models)
    kwargs: Dict[str, Any] = dict(num_classes=cfg.num_classes or num_classes, in_chans=in_chans)
    source, name = parse_model_name(cfg.model)
    architecture = split_model_name_tag(name)[0]
    fixed = source is None and timm.is_model(architecture) and getattr(
        get_pretrained_cfg(architecture), "fixed_input_size", False)
    if fixed or "img_size" in cfg.model_kwargs:
        kwargs["img_size"] = img_size
    kwargs.update(cfg.model_kwargs)
    return timm.create_model(cfg.model, **kwargs)


def check_memory(cfg: TrainConfig, num_classes: int, in_chans: int, img_size: int, device: torch.device,
                 local_processes: int = 1) -> int:
    """Refuses a job whose weights alone (fp32 weights, gradients, optimiser state) exceed the free
    RAM or GPU memory, before anything is allocated: one clear error instead of an OOM kill.
    Counts the weights on the meta device; returns the count.

    Args:
        cfg: the run configuration (model, optimiser, EMA).
        num_classes: the data's class count.
        in_chans: the data's image channels.
        img_size: the data's image size.
        device: the device the run trains on (CUDA: its free memory; else the available RAM).
        local_processes: training processes on this machine, which share its RAM.

    Returns:
        The number of weights of the model.

    Raises:
        ValueError: if the estimated memory exceeds what is free.
    """
    import psutil
    with torch.device("meta"):
        weights = sum(p.numel() for p in create_run_model(cfg, num_classes, in_chans, img_size).parameters())
    state = 4 if cfg.opt.lower() in ("sgd", "momentum", "nesterov") else 8
    need = weights * (8 + state + (4 if cfg.ema else 0))
    if device.type == "cuda":
        free, where = torch.cuda.mem_get_info(device)[0], f"GPU memory on {device}"
    else:
        free = psutil.virtual_memory().available // local_processes
        where = "RAM" + (f" per process ({local_processes} on this machine)" if local_processes > 1 else "")
    if need > free:
        raise ValueError(f"{cfg.model} at {img_size}x{img_size} has {weights / 1e9:.2f} B weights: training needs "
                         f"at least {need / 2**30:.1f} GiB (fp32 weights, gradients, {cfg.opt} state) but only "
                         f"{free / 2**30:.1f} GiB of {where} is free; pass a smaller --img-size or model")
    return weights


def _cpu_processes() -> bool:
    """A multi-process launch on a machine without CUDA: run on CPU (gloo). ``accelerate launch``
    with a MULTI_GPU config does not pass its ``use_cpu`` on (recipes/accelerate/cpu_2proc.yaml), and
    each process would otherwise start a single-process run of its own."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def _scalars(cfg: TrainConfig) -> Dict[str, Any]:
    """The config as trackers accept it (scalars; lists and mappings as text)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in cfg.to_dict().items()}


def build_sleep(cfg: TrainConfig, model: nn.Module) -> Optional[SleepPhase]:
    """The run's SleepPhase: the model's own settings (``_hebb`` models) updated by the ``sleep_*`` keys.

    Args:
        cfg: the run configuration (``sleep``, ``sleep_*`` keys, ``seed``).
        model: the run's model; its ``sleep_cfg``, if any, gives the base settings.

    Returns:
        The ``SleepPhase``, or None when the run does not sleep.
    """
    settings = cfg.sleep_settings(getattr(model, "sleep_cfg", None))
    return None if settings is None else SleepPhase.from_settings(settings, seed=cfg.seed)


_REPORT_KEYS = ("snr_before", "snr", "deviation_before", "deviation_after", "wall_time", "rolled_back",
                "loss_before", "loss_after")
PROBE_IMAGES = 32  # images of the current batch whose loss is measured just before and after each share


def _report_summary(report: Any) -> Dict[str, Any]:
    """The aggregates of a SharingReport (the per-layer entries stay out of metrics.jsonl)."""
    return {k: getattr(report, k) for k in _REPORT_KEYS if hasattr(report, k)}


@torch.no_grad()
def _probe_loss(module: nn.Module, images: torch.Tensor, targets: torch.Tensor, accelerator: Any) -> float:
    """The training loss of ``module`` on the first ``PROBE_IMAGES`` of a batch, leaving the model as it was.

    Training-mode forward (batch statistics, as the training loss) on copies of the buffers, so
    BatchNorm's running statistics are not changed by the measurement.
    """
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    with accelerator.autocast():
        logits = torch.func.functional_call(module, buffers, (images[:PROBE_IMAGES],), strict=False)
        return F.cross_entropy(logits.float(), targets[:PROBE_IMAGES]).item()


def _total_snr(model: nn.Module, pools: str) -> Optional[float]:
    snr = sharing_snr(model, pools=pools).get("snr")
    return float(snr) if snr is not None else None


def _timm_milestones(cfg: TrainConfig) -> List[int]:
    """``decay_milestones`` as timm's multistep scheduler reads them.

    The config means what torch's ``MultiStepLR`` (and the reference code) means: the lr is
    multiplied by ``decay_rate`` once ``m`` epochs are complete. timm applies milestone ``m`` one
    epoch earlier (at epoch index ``m - 1``), so epoch milestones are passed on as ``m + 1``.
    """
    milestones = list(cfg.decay_milestones)
    return milestones if cfg.sched_on_updates else [m + 1 for m in milestones]


def _progress_postfix(loss: float, train_correct: torch.Tensor, train_count: int,
                      last_eval: Dict[str, Any]) -> Dict[str, str]:
    """The progress bar's loss, running training accuracy of the epoch and last test accuracy."""
    postfix = {"loss": f"{loss:.3f}"}
    if train_count:
        postfix["train_acc"] = f"{100.0 * train_correct.item() / train_count:.1f}%"
    if last_eval.get("test_acc") is not None:
        postfix["test_acc"] = f"{last_eval['test_acc']:.1f}%"
    return postfix


@dataclass
class Meter:
    """Running sums over a stretch of batches (an epoch, a logging interval), kept on the device so
    that a batch costs no host sync; ``images`` counts every process's, ``correct``/``count`` this one's."""
    device: torch.device
    num_processes: int
    loss: torch.Tensor = field(init=False)
    correct: torch.Tensor = field(init=False)
    batches: int = field(init=False)
    images: int = field(init=False)
    count: int = field(init=False)
    start: float = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct = torch.zeros((), dtype=torch.float64, device=self.device)
        self.batches = self.images = self.count = 0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, correct: torch.Tensor, batch_size: int) -> None:
        self.loss += loss
        self.correct += correct
        self.batches += 1
        self.images += batch_size * self.num_processes
        self.count += batch_size

    def seconds(self) -> float:
        return max(time.perf_counter() - self.start, 1e-9)


@dataclass
class Job:
    """What ``setup`` builds for a run; fixed while it trains."""
    cfg: TrainConfig
    out: Path
    accelerator: Any
    data: Any
    model: nn.Module  # as prepared by Accelerate (DDP, compile)
    unwrapped: nn.Module
    optimizer: Any
    scheduler: Any
    sleep: Optional[SleepPhase]
    ema: Optional[nn.Module]
    train_loader: Any
    sampler: Any
    eval_loader: Any
    num_weights: int
    batches_per_epoch: int
    num_epochs: int
    total_steps: int
    resumed_from: Optional[Path]
    metrics: Optional[MetricsWriter] = None
    progress: Any = None

    def say(self, line: str) -> None:
        """One line on stdout, above the progress bar, from the main process only."""
        if self.accelerator.is_main_process:
            tqdm.write(line, file=sys.stdout)
            sys.stdout.flush()

    def log(self, event: str, at_step: int, **values: Any) -> None:
        """One record in metrics.jsonl and the numeric values to the trackers."""
        self.metrics.log(event, at_step, **values)
        self.accelerator.log({f"{event}/{k}": v for k, v in values.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=at_step)


@dataclass
class State:
    """Where a run stands: the counters a checkpoint restores, the last evaluation and the running sums."""
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    skip: int = 0  # batches of the current epoch already trained before a resume
    last_eval: Dict[str, Any] = field(default_factory=dict)
    last_eval_step: int = -1
    last_ckpt_step: int = -1
    last_share_snr: Optional[float] = None  # the SNR just before the most recent share
    sleep_time_logged: float = 0.0
    epoch_meter: Optional[Meter] = None
    interval: Optional[Meter] = None


def setup(cfg: TrainConfig) -> Tuple[Job, State]:
    """Resolves the config and builds everything a run needs, checking all that can fail at the start
    (config, output directory, data, memory, checkpoint) while reading only: nothing is written yet."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from timm.scheduler import create_scheduler_v2

    from .optimizer import create_optimizer

    cfg = resolve_config(cfg)
    out = resolve_output_dir(cfg)
    _check_output_dir(cfg, out)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum_steps,
                              step_scheduler_with_optimizer=False, cpu=_cpu_processes(),
                              log_with=trackers_for(cfg.report_to), project_dir=str(out))
    data = build_data(cfg)
    num_weights = check_memory(cfg, data.num_classes, data.in_chans, data.img_size, accelerator.device,
                               int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes)))
    set_seed(cfg.seed)  # the same model init on every process
    model = create_run_model(cfg, data.num_classes, data.in_chans, data.img_size)
    sleep = build_sleep(cfg, model)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model, cfg.opt, cfg.lr, cfg.weight_decay, cfg.momentum)
    train_loader, sampler = build_train_loader(data, cfg)
    eval_loader = build_eval_loader(data, cfg)
    if cfg.compile:
        model = torch.compile(model)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    batches_per_epoch = len(train_loader)
    updates_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum_steps)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs, decay_milestones=_timm_milestones(cfg),
        decay_rate=cfg.decay_rate, warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr,
        step_on_epochs=not cfg.sched_on_updates, updates_per_epoch=updates_per_epoch)
    total_steps = num_epochs * updates_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    ema = None
    if cfg.ema:
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(unwrapped, decay=cfg.ema_decay)
    for stateful in (scheduler, sleep, ema):
        if stateful is not None:
            accelerator.register_for_checkpointing(stateful)
    job = Job(cfg, out, accelerator, data, model, unwrapped, optimizer, scheduler, sleep, ema, train_loader, sampler,
              eval_loader, num_weights, batches_per_epoch, num_epochs, total_steps,
              resumed_from=latest_checkpoint(out) if cfg.resume else None)
    state = State()
    if job.resumed_from is not None:  # reads only: a checkpoint that does not fit fails before anything is written
        saved = load_checkpoint(accelerator, job.resumed_from)
        state.step, state.epoch, state.skip = saved["step"], saved["epoch"], saved["batch_in_epoch"]
        if state.skip >= batches_per_epoch:
            state.epoch, state.skip = state.epoch + 1, 0
        state.last_ckpt_step = state.step
    if sleep is not None:
        state.sleep_time_logged = sleep.sleep_time
    return job, state


def open_run(job: Job, state: State) -> None:
    """Every start-up check has passed: prepares the output directory, the trackers and metrics.jsonl,
    prints the start line and sets the schedule to where the run stands."""
    cfg, accelerator, data = job.cfg, job.accelerator, job.data
    if accelerator.is_main_process:
        if cfg.overwrite:
            remove_run_files(job.out)
        job.out.mkdir(parents=True, exist_ok=True)
        remove_partial_checkpoints(job.out)
        save_config(cfg, job.out / RECIPE_NAME)
    accelerator.wait_for_everyone()
    accelerator.init_trackers(cfg.name or "demo", config=_scalars(cfg))
    processes = f"{accelerator.num_processes} process{'es' if accelerator.num_processes > 1 else ''}"
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", accelerator.mixed_precision)
    precision = accelerator.mixed_precision + (f" (recipe/flag; accelerate launch: {launcher})"
                                               if launcher != accelerator.mixed_precision else "")
    job.say(f"training {cfg.model} ({job.num_weights:,} weights) on {data.name} ({len(data.train):,} train / "
            f"{len(data.eval):,} eval images, {data.in_chans}x{data.img_size}x{data.img_size}, {data.num_classes} "
            f"classes) into {job.out}: {processes} on {accelerator.device.type}, precision {precision}, "
            f"{_plural(job.total_steps, 'step')}")
    job.metrics = MetricsWriter(job.out / METRICS_NAME, enabled=accelerator.is_main_process,
                                constant={"num_processes": accelerator.num_processes})
    if job.resumed_from is not None:
        job.metrics.truncate_after(state.step)
        job.say(f"resumed from {job.resumed_from} at step {state.step} (epoch {state.epoch}, batch {state.skip})")
    else:
        job.metrics.log("start", 0, model=cfg.model, dataset=data.name, params=job.num_weights,
                        total_steps=job.total_steps, mixed_precision=accelerator.mixed_precision,
                        sleep=job.sleep.config() if job.sleep else None)
    job.scheduler.step(state.epoch)
    job.scheduler.step_update(state.step)
    state.interval = Meter(accelerator.device, accelerator.num_processes)


def train_epoch(job: Job, state: State, interrupts: DeferredInterrupt) -> None:
    """One epoch (its rest, after a resume): steps with their sleeps, logging, evaluations and
    checkpoints as due, then the epoch line."""
    accelerator = job.accelerator
    job.sampler.set_epoch(state.epoch)
    job.train_loader.set_epoch(state.epoch)
    loader = job.train_loader
    if state.skip:
        loader = accelerator.skip_first_batches(job.train_loader, state.skip)
        loader.set_epoch(state.epoch)
    state.batch_in_epoch, state.skip = state.skip, 0
    state.epoch_meter = Meter(accelerator.device, accelerator.num_processes)
    for images, targets in loader:
        with accelerator.accumulate(job.model):
            logits, loss = _forward_backward(job, images, targets)
        state.batch_in_epoch += 1
        correct = (logits.detach().argmax(-1) == targets).sum()
        for meter in (state.interval, state.epoch_meter):
            meter.add(loss.detach(), correct, targets.shape[0])
        if not accelerator.sync_gradients:
            continue
        _after_update(job, state, images, targets)
        interrupts.check()
        if state.step >= job.total_steps:
            break
    if state.epoch_meter.batches:
        job.say(_epoch_line(job, state))
    if state.batch_in_epoch >= job.batches_per_epoch:
        state.epoch += 1
        job.scheduler.step(state.epoch)


def _forward_backward(job: Job, images: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The forward, the backward and (once gradients are complete) the optimiser update of one batch."""
    cfg, accelerator = job.cfg, job.accelerator
    if cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with accelerator.autocast():
        logits = job.model(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=cfg.label_smoothing)
    accelerator.backward(loss)
    if cfg.clip_grad is not None and accelerator.sync_gradients:
        accelerator.clip_grad_norm_(job.model.parameters(), cfg.clip_grad)
    job.optimizer.step()
    job.optimizer.zero_grad(set_to_none=True)
    return logits, loss


def _due(every: Optional[int], step: int, end_of_epoch: bool, total_steps: int) -> bool:
    """Whether an every-``every``-steps event (``None``: at each epoch's end) happens at ``step``."""
    return bool(every and step % every == 0) or (every is None and end_of_epoch) or step == total_steps


def _after_update(job: Job, state: State, images: torch.Tensor, targets: torch.Tensor) -> None:
    """What follows an optimiser update: the sleep phase, EMA, schedule, then logging, evaluation and
    checkpoint where due."""
    cfg, accelerator = job.cfg, job.accelerator
    state.step += 1
    if job.sleep is not None:
        report = job.sleep.step(accelerator, job.model, optimizer=job.optimizer,
                                probe=lambda: _probe_loss(job.unwrapped, images, targets, accelerator))
        if report is not None:
            state.last_share_snr = report.snr_before
            job.log("sleep", state.step, **_report_summary(report))
    if job.ema is not None:
        job.ema.update(job.unwrapped, step=state.step)
    job.scheduler.step_update(state.step)
    job.progress.update(1)
    end_of_epoch = state.batch_in_epoch >= job.batches_per_epoch
    if state.step % cfg.log_every == 0 or state.step == job.total_steps:
        _log_interval(job, state)
    if _due(cfg.eval_every, state.step, end_of_epoch, job.total_steps):
        state.last_eval, state.last_eval_step = evaluate(job, state), state.step
    if _due(cfg.checkpoint_every, state.step, end_of_epoch, job.total_steps):
        checkpoint(job, state, state.batch_in_epoch)


def _log_interval(job: Job, state: State) -> None:
    """A ``train`` record (mean loss, lr, throughput, share of the time asleep) for the steps since the last."""
    interval = state.interval
    sleep_fraction = 0.0
    if job.sleep is not None:
        sleep_fraction = (job.sleep.sleep_time - state.sleep_time_logged) / interval.seconds()
        state.sleep_time_logged = job.sleep.sleep_time
    mean_loss = interval.loss.item() / max(interval.batches, 1)
    job.log("train", state.step, epoch=state.epoch, loss=mean_loss, lr=job.optimizer.param_groups[0]["lr"],
            images_per_s=interval.images / interval.seconds(), sleep_fraction=sleep_fraction)
    if not job.progress.disable:
        job.progress.set_postfix(_progress_postfix(mean_loss, state.epoch_meter.correct, state.epoch_meter.count,
                                                   state.last_eval))
    interval.reset()


def _epoch_line(job: Job, state: State) -> str:
    """The line printed after each epoch: mean loss over all processes, last accuracies and SNR, throughput."""
    meter, last_eval = state.epoch_meter, state.last_eval
    loss = job.accelerator.reduce(meter.loss, reduction="sum").item() / max(
        meter.batches * job.accelerator.num_processes, 1)
    parts = [f"loss {loss:.4f}"] + [f"{label} {last_eval[key]:.2f}%" for key, label in
                                     (("train_acc", "train acc"), ("test_acc", "test acc"))
                                     if last_eval.get(key) is not None]
    if last_eval.get("snr") is not None:
        parts.append(f"SNR {last_eval['snr']:.4g}")
    parts.append(f"{meter.images / meter.seconds():,.0f} img/s")
    return f"epoch {state.epoch + 1}/{job.num_epochs} (step {state.step}/{job.total_steps}): " + ", ".join(parts)


def evaluate(job: Job, state: State) -> Dict[str, Any]:
    """Test accuracy and loss (and the EMA's), the epoch's running training accuracy, the SNR and the
    sleep totals, logged as an ``eval`` record; returns them."""
    cfg, accelerator, sleep = job.cfg, job.accelerator, job.sleep
    result = evaluate_accuracy(job.model, job.eval_loader, accelerator, channels_last=cfg.channels_last)
    values = {"epoch": state.epoch, "test_acc": result["accuracy"], "test_loss": result["loss"]}
    if job.ema is not None:
        values["ema_test_acc"] = evaluate_accuracy(job.ema.module, job.eval_loader, accelerator,
                                                   channels_last=cfg.channels_last)["accuracy"]
    if any(isinstance(m, LocallyConnected2d) for m in job.unwrapped.modules()):
        # a sleeping run's SNR at a fixed phase of the cycle: just before the last share (before the first: now)
        values["snr"] = state.last_share_snr if state.last_share_snr is not None else \
            _total_snr(job.unwrapped, "paper" if sleep is None else sleep.pools)
    meter = state.epoch_meter
    if meter is not None and meter.count:
        counts = accelerator.reduce(torch.stack([meter.correct, meter.correct.new_tensor(meter.count)]),
                                    reduction="sum")
        values["train_acc"] = 100.0 * counts[0].item() / max(counts[1].item(), 1.0)
    if sleep is not None:
        values["sleep_time"] = sleep.sleep_time
        values["num_sleeps"] = sleep.num_sleeps
    job.log("eval", state.step, **values)
    return values


def checkpoint(job: Job, state: State, batch_in_epoch: int) -> None:
    """A complete, resumable checkpoint of the run at its current step."""
    save_checkpoint(job.accelerator, job.out, state.step,
                    {"epoch": state.epoch, "batch_in_epoch": batch_in_epoch,
                     "batches_per_epoch": job.batches_per_epoch}, keep=job.cfg.keep_checkpoints)
    state.last_ckpt_step = state.step


def finish(job: Job, state: State, train_time_s: float) -> Dict[str, Any]:
    """The last evaluation and checkpoint (if not just done), then the run directory's model, config,
    plots and final record; returns the final metrics."""
    accelerator, data = job.accelerator, job.data
    if state.last_eval_step != state.step:
        state.last_eval, state.last_eval_step = evaluate(job, state), state.step
    if state.last_ckpt_step != state.step:
        checkpoint(job, state, job.batches_per_epoch if state.batch_in_epoch == 0 else state.batch_in_epoch)
    final = {"step": state.step, "epoch": state.epoch, **{k: v for k, v in state.last_eval.items() if k != "epoch"},
             "train_time_s": train_time_s}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        extra = {"sleep": job.sleep.settings if job.sleep is not None else None, "recipe": job.cfg.to_dict(),
                 "dataset": data.name, "metrics": final,
                 # the preprocessing this model was trained with, for timm's resolve_data_config
                 "pretrained_cfg": {"mean": list(data.mean), "std": list(data.std), "crop_pct": 1.0,
                                    "num_classes": job.unwrapped.num_classes}}
        save_pretrained(job.unwrapped, job.out, extra_config=extra)
        if job.cfg.plots:
            plot_metrics(job.out / METRICS_NAME, job.out / PLOTS_DIR, title=job.cfg.name or job.cfg.model)
        job.log("final", state.step, **{k: v for k, v in final.items() if k != "step"})
    accelerator.wait_for_everyone()
    job.say(f"final test accuracy: {final.get('test_acc', float('nan')):.2f}% after {_plural(state.step, 'step')}; "
            f"run saved to {job.out}")
    accelerator.end_training()
    return final


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Trains as configured: setup, the epoch loop, the final evaluation and save.

    Args:
        cfg: the run's configuration (``timm-lc train`` builds it from a recipe and flags).

    Returns:
        The final metrics (step, epoch, test accuracy and loss, ...), also stored in the run's config.json.

    Raises:
        RunExistsError: the output directory holds a run and neither ``resume`` nor ``overwrite`` is set.
        FileNotFoundError: ``resume`` is set but the output directory holds no complete checkpoint.
        ValueError: a config value, the data or the memory needed does not fit.
        KeyboardInterrupt: Ctrl-C, after the step in progress and its checkpoint.
    """
    job, state = setup(cfg)
    open_run(job, state)
    # the bar only on a terminal: redirected to a file, the log holds the start and epoch lines only
    on_terminal = sys.stdout.isatty() and sys.stderr.isatty()
    job.progress = tqdm(total=job.total_steps, initial=state.step, desc="train", dynamic_ncols=True, file=sys.stderr,
                        disable=not (job.accelerator.is_main_process and job.cfg.progress and on_terminal))
    job.model.train()
    wall_start = time.perf_counter()
    interrupts = DeferredInterrupt()  # Ctrl-C stops after the current step, its sleep and its checkpoint
    interrupts.install()
    try:
        while state.step < job.total_steps and state.epoch < job.num_epochs:
            train_epoch(job, state, interrupts)
    except Exception:
        if interrupts.requested:  # e.g. data loader workers stopped by the same Ctrl-C
            raise KeyboardInterrupt from None
        raise
    finally:  # also on Ctrl-C: leave the terminal clean for the one-line message
        interrupts.restore()
        job.progress.close()
    interrupts.check()
    return finish(job, state, time.perf_counter() - wall_start)
