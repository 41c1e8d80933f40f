"""Top-1 accuracy of a model on a data set, and the model a ``timm-lc eval MODEL_OR_RUN`` evaluates.

MODEL_OR_RUN is a run directory (loaded with ``timm.create_model("local-dir:RUN",
pretrained=True)``; its recipe supplies the data set and preprocessing), an ``hf-hub:`` /
``local-dir:`` name, or a timm model name (``--pretrained`` for its published weights).
"""
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["evaluate_accuracy", "load_model_for_eval", "check_input_fits"]


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, loader, accelerator=None, channels_last: bool = False) -> Dict[str, float]:
    """Top-1 accuracy (percent), mean cross-entropy and image count of ``model`` over ``loader``.

    With an ``accelerator`` the loader is expected to be prepared (sharded); predictions are
    gathered from all processes (``gather_for_metrics`` drops the padding of the last batch).
    The model runs in eval mode, without gradients, and is left in the mode it was in.

    Args:
        model: the classifier to evaluate.
        loader: yields ``(images, targets)`` batches.
        accelerator: the run's ``Accelerator`` (autocast and gathering); None moves each batch to the
            model's device and evaluates on this process alone.
        channels_last: convert the images to channels-last memory format first.

    Returns:
        ``{"accuracy": percent, "loss": mean cross-entropy, "count": number of images}``.

    Raises:
        ValueError: if the loader yields no images.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct, total, loss_sum = 0, 0, 0.0
    for images, targets in loader:
        if accelerator is None:
            images, targets = images.to(device), targets.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if accelerator is not None:
            with accelerator.autocast():
                logits = model(images)
            logits, targets = accelerator.gather_for_metrics((logits.float(), targets))
        else:
            logits = model(images).float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        correct += (logits.argmax(-1) == targets).sum().item()
        total += targets.numel()
    model.train(was_training)
    if total == 0:
        raise ValueError("evaluation data set is empty")
    return {"accuracy": 100.0 * correct / total, "loss": loss_sum / total, "count": total}


def load_model_for_eval(name: str, pretrained: bool = False) -> Tuple[nn.Module, Dict[str, Any]]:
    """The model and its checkpoint's config.json (empty for a bare model name).

    Run directories, ``local-dir:`` and ``hf-hub:`` names go through :mod:`timm_lc.hub`, which checks
    the checkpoint first (clear errors for a missing or corrupt file, an unknown repo or revision, an
    unregistered architecture) and reads its config.json (data set, recipe) for the evaluation.

    Args:
        name: a run directory, an ``hf-hub:`` / ``local-dir:`` name, or a timm model name.
        pretrained: for a timm model name, load its published weights (else random weights).

    Returns:
        ``(model, config)``: the model and its checkpoint's config.json, ``{}`` for a timm model name.

    Raises:
        ValueError: if ``name`` is none of the above.
        HubError: if a checkpoint cannot be found, downloaded or read (from :mod:`timm_lc.hub`).
        FileNotFoundError: if a run directory lacks config.json or weights.
    """
    import timm
    from timm_lc.hub import load_pretrained_model, resolve_checkpoint
    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")) or Path(name).is_dir():
        config, _ = resolve_checkpoint(name)
        return load_pretrained_model(name, verify_hash=False), config
    if not timm.is_model(name.split(".")[0]):
        raise ValueError(f"{name!r} is neither a run directory, an hf-hub:/local-dir: name nor a timm model")
    return (load_pretrained_model(name) if pretrained else timm.create_model(name)), {}


def check_input_fits(model: nn.Module, name: str, data) -> None:
    """Checks that the data's images have the channels (and, for a fixed-size model, the size) the model takes.

    Args:
        model: a timm model (its pretrained cfg gives the input size).
        name: the model's name, for the message.
        data: the ``DataBundle`` to evaluate on (``in_chans``, ``img_size``, ``name``).

    Raises:
        ValueError: if the channels differ, or the model has a fixed input size other than the data's.
    """
    from timm.data import resolve_model_data_config
    config = resolve_model_data_config(model)
    c, h, w = config["input_size"]
    fixed = model.pretrained_cfg.get("fixed_input_size", False)
    if c != data.in_chans or (fixed and (h, w) != (data.img_size, data.img_size)):
        raise ValueError(f"{name} takes {c}x{h}x{w} images, data set {data.name!r} gives {data.in_chans}x"
                         f"{data.img_size}x{data.img_size}; evaluate a model built for this data (a run directory, "
                         f"an hf-hub:/local-dir: checkpoint, or a pretrained tag with --pretrained)")
