"""The Accelerate training loop behind ``timm-lc train`` and ``python -m timm_lc.train``.

One function, ``train(cfg)``: resolves the config (``resolve_config``: image size, precision),
builds data, model (timm), optimiser and scheduler (timm's factories), optional EMA and the
``SleepPhase`` hook, then trains with Accelerate (DDP, mixed precision, gradient accumulation,
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
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

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
    """``cfg.output_dir`` or ``runs/<run name>`` (the recipe's name, ``demo`` for the default)."""
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
    architecture; an ``hf-hub:`` / ``local-dir:`` checkpoint keeps the size its config.json records)."""
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
    Counts the weights on the meta device; returns the count."""
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
    """The run's SleepPhase: the model's own settings (``_hebb`` models) updated by the ``sleep_*`` keys."""
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


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Trains as configured; returns the final metrics (also stored in the run's config.json)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from timm.scheduler import create_scheduler_v2
    from tqdm.auto import tqdm

    from .optimizer import create_optimizer

    cfg = resolve_config(cfg)
    out = resolve_output_dir(cfg)
    _check_output_dir(cfg, out)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum_steps,
                              step_scheduler_with_optimizer=False, cpu=_cpu_processes(),
                              log_with=trackers_for(cfg.report_to), project_dir=str(out))
    is_main = accelerator.is_main_process

    def say(line: str) -> None:  # above the progress bar, main process only
        if is_main:
            tqdm.write(line, file=sys.stdout)
            sys.stdout.flush()

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
    accelerator.register_for_checkpointing(scheduler)
    if sleep is not None:
        accelerator.register_for_checkpointing(sleep)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    step, epoch, skip = 0, 0, 0
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None:  # reads only: a checkpoint that does not fit fails before anything is written
        state = load_checkpoint(accelerator, ckpt)
        step, epoch, skip = state["step"], state["epoch"], state["batch_in_epoch"]
        if skip >= batches_per_epoch:
            epoch, skip = epoch + 1, 0

    # every start-up check has passed: only now is the output directory touched
    if is_main:
        if cfg.overwrite:
            remove_run_files(out)
        out.mkdir(parents=True, exist_ok=True)
        remove_partial_checkpoints(out)
        save_config(cfg, out / RECIPE_NAME)
    accelerator.wait_for_everyone()
    accelerator.init_trackers(cfg.name or "demo", config=_scalars(cfg))
    processes = f"{accelerator.num_processes} process{'es' if accelerator.num_processes > 1 else ''}"
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", accelerator.mixed_precision)
    precision = accelerator.mixed_precision + (f" (recipe/flag; accelerate launch: {launcher})"
                                               if launcher != accelerator.mixed_precision else "")
    say(f"training {cfg.model} ({num_weights:,} weights) on {data.name} ({len(data.train):,} train / "
        f"{len(data.eval):,} eval images, {data.in_chans}x{data.img_size}x{data.img_size}, {data.num_classes} "
        f"classes) into {out}: {processes} on {accelerator.device.type}, precision {precision}, "
        f"{total_steps} step{'s' if total_steps != 1 else ''}")
    metrics = MetricsWriter(out / METRICS_NAME, enabled=is_main, constant={"num_processes": accelerator.num_processes})

    def log(event: str, at_step: int, **values: Any) -> None:  # metrics.jsonl and the trackers
        metrics.log(event, at_step, **values)
        accelerator.log({f"{event}/{k}": v for k, v in values.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=at_step)

    if ckpt is not None:
        metrics.truncate_after(step)
        say(f"resumed from {ckpt} at step {step} (epoch {epoch}, batch {skip})")
    else:
        metrics.log("start", 0, model=cfg.model, dataset=data.name, params=num_weights, total_steps=total_steps,
                    mixed_precision=accelerator.mixed_precision, sleep=sleep.config() if sleep else None)
    scheduler.step(epoch)
    scheduler.step_update(step)

    last_share_snr: Optional[float] = None
    has_lc = any(isinstance(m, LocallyConnected2d) for m in unwrapped.modules())
    last_eval: Dict[str, Any] = {}
    last_eval_step, last_ckpt_step = -1, step if cfg.resume else -1

    def run_eval() -> Dict[str, Any]:
        result = evaluate_accuracy(model, eval_loader, accelerator, channels_last=cfg.channels_last)
        values = {"epoch": epoch, "test_acc": result["accuracy"], "test_loss": result["loss"]}
        if ema is not None:
            values["ema_test_acc"] = evaluate_accuracy(ema.module, eval_loader, accelerator,
                                                       channels_last=cfg.channels_last)["accuracy"]
        if has_lc:  # a sleeping run's SNR at a fixed phase of the cycle: just before the last share
            values["snr"] = last_share_snr if last_share_snr is not None else \
                _total_snr(unwrapped, "paper" if sleep is None else sleep.pools)  # (before the first share: now)
        if train_count:
            counts = accelerator.reduce(torch.stack([train_correct, train_correct.new_tensor(train_count)]),
                                        reduction="sum")
            values["train_acc"] = 100.0 * counts[0].item() / max(counts[1].item(), 1.0)
        if sleep is not None:
            values["sleep_time"] = sleep.sleep_time
            values["num_sleeps"] = sleep.num_sleeps
        log("eval", step, **values)
        model.train()
        return values

    def checkpoint(batch_in_epoch: int) -> None:
        save_checkpoint(accelerator, out, step, {"epoch": epoch, "batch_in_epoch": batch_in_epoch,
                                                 "batches_per_epoch": batches_per_epoch}, keep=cfg.keep_checkpoints)

    # the bar only on a terminal: redirected to a file, the log holds the start and epoch lines only
    on_terminal = sys.stdout.isatty() and sys.stderr.isatty()
    progress = tqdm(total=total_steps, initial=step, disable=not (is_main and cfg.progress and on_terminal),
                    desc="train", dynamic_ncols=True, file=sys.stderr)
    model.train()
    # running sums stay on the device: no host sync per batch, only when logging
    def zero() -> torch.Tensor:
        return torch.zeros((), dtype=torch.float64, device=accelerator.device)

    def epoch_line(loss_sum: torch.Tensor, batches: int, images: int, seconds: float) -> str:
        loss = accelerator.reduce(loss_sum, reduction="sum").item() / max(batches * accelerator.num_processes, 1)
        parts = [f"loss {loss:.4f}"] + [f"{label} {last_eval[key]:.2f}%" for key, label in
                                         (("train_acc", "train acc"), ("test_acc", "test acc"))
                                         if last_eval.get(key) is not None]
        if last_eval.get("snr") is not None:
            parts.append(f"SNR {last_eval['snr']:.4g}")
        parts.append(f"{images / max(seconds, 1e-9):,.0f} img/s")
        return f"epoch {epoch + 1}/{num_epochs} (step {step}/{total_steps}): " + ", ".join(parts)

    train_correct, train_count = zero(), 0
    interval_loss, interval_batches, interval_images = zero(), 0, 0
    interval_start = time.perf_counter()
    start_sleep_time = sleep.sleep_time if sleep is not None else 0.0
    wall_start = time.perf_counter()
    batch_in_epoch = 0
    interrupts = DeferredInterrupt()  # Ctrl-C stops after the current step, its sleep and its checkpoint
    interrupts.install()
    try:
        while step < total_steps and epoch < num_epochs:
            sampler.set_epoch(epoch)
            train_loader.set_epoch(epoch)
            loader = train_loader
            if skip:
                loader = accelerator.skip_first_batches(train_loader, skip)
                loader.set_epoch(epoch)
            batch_in_epoch = skip
            skip = 0
            train_correct, train_count = zero(), 0
            epoch_loss, epoch_batches, epoch_images, epoch_start = zero(), 0, 0, time.perf_counter()
            for images, targets in loader:
                with accelerator.accumulate(model):
                    if cfg.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    with accelerator.autocast():
                        logits = model(images)
                        loss = F.cross_entropy(logits, targets, label_smoothing=cfg.label_smoothing)
                    accelerator.backward(loss)
                    if cfg.clip_grad is not None and accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                batch_in_epoch += 1
                interval_loss += loss.detach()
                epoch_loss += loss.detach()
                interval_batches += 1
                epoch_batches += 1
                interval_images += images.shape[0] * accelerator.num_processes
                epoch_images += images.shape[0] * accelerator.num_processes
                train_correct += (logits.detach().argmax(-1) == targets).sum()
                train_count += targets.numel()
                if not accelerator.sync_gradients:
                    continue
                step += 1
                if sleep is not None:
                    report = sleep.step(accelerator, model, optimizer=optimizer,
                                        probe=lambda: _probe_loss(unwrapped, images, targets, accelerator))
                    if report is not None:
                        last_share_snr = report.snr_before
                        log("sleep", step, **_report_summary(report))
                if ema is not None:
                    ema.update(unwrapped, step=step)
                scheduler.step_update(step)
                progress.update(1)
                end_of_epoch = batch_in_epoch >= batches_per_epoch
                if step % cfg.log_every == 0 or step == total_steps:
                    elapsed = time.perf_counter() - interval_start
                    sleep_share = 0.0
                    if sleep is not None:
                        sleep_share = (sleep.sleep_time - start_sleep_time) / max(elapsed, 1e-9)
                        start_sleep_time = sleep.sleep_time
                    mean_loss = interval_loss.item() / max(interval_batches, 1)
                    log("train", step, epoch=epoch, loss=mean_loss, lr=optimizer.param_groups[0]["lr"],
                        images_per_s=interval_images / max(elapsed, 1e-9), sleep_fraction=sleep_share)
                    if not progress.disable:
                        progress.set_postfix(_progress_postfix(mean_loss, train_correct, train_count, last_eval))
                    interval_loss, interval_batches, interval_images = zero(), 0, 0
                    interval_start = time.perf_counter()
                if (cfg.eval_every and step % cfg.eval_every == 0) or (cfg.eval_every is None and end_of_epoch) \
                        or step == total_steps:
                    last_eval, last_eval_step = run_eval(), step
                if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or \
                        (cfg.checkpoint_every is None and end_of_epoch) or step == total_steps:
                    checkpoint(batch_in_epoch)
                    last_ckpt_step = step
                interrupts.check()
                if step >= total_steps:
                    break
            if epoch_batches:
                say(epoch_line(epoch_loss, epoch_batches, epoch_images, time.perf_counter() - epoch_start))
            if batch_in_epoch >= batches_per_epoch:
                epoch += 1
                scheduler.step(epoch)
    except Exception:
        if interrupts.requested:  # e.g. data loader workers stopped by the same Ctrl-C
            raise KeyboardInterrupt from None
        raise
    finally:  # also on Ctrl-C: leave the terminal clean for the one-line message
        interrupts.restore()
        progress.close()
    interrupts.check()

    if last_eval_step != step:
        last_eval, last_eval_step = run_eval(), step
    if last_ckpt_step != step:
        checkpoint(batches_per_epoch if batch_in_epoch == 0 else batch_in_epoch)
    final = {"step": step, "epoch": epoch, **{k: v for k, v in last_eval.items() if k != "epoch"},
             "train_time_s": time.perf_counter() - wall_start}
    accelerator.wait_for_everyone()
    if is_main:
        extra = {"sleep": sleep.settings if sleep is not None else None, "recipe": cfg.to_dict(),
                 "dataset": data.name, "metrics": final,
                 # the preprocessing this model was trained with, for timm's resolve_data_config
                 "pretrained_cfg": {"mean": list(data.mean), "std": list(data.std), "crop_pct": 1.0,
                                    "num_classes": unwrapped.num_classes}}
        save_pretrained(unwrapped, out, extra_config=extra)
        if cfg.plots:
            plot_metrics(out / METRICS_NAME, out / PLOTS_DIR, title=cfg.name or cfg.model)
        log("final", step, **{k: v for k, v in final.items() if k != "step"})
    accelerator.wait_for_everyone()
    say(f"final test accuracy: {final.get('test_acc', float('nan')):.2f}% after {step} step{'s' if step != 1 else ''}; "
        f"run saved to {out}")
    accelerator.end_training()
    return final
