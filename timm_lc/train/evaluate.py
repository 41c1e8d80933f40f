"""Top-1 accuracy of a model on a data set, and ``timm-lc eval MODEL_OR_RUN``.

MODEL_OR_RUN is a run directory (loaded with ``timm.create_model("local-dir:RUN",
pretrained=True)``; its recipe supplies the data set and preprocessing), an ``hf-hub:`` /
``local-dir:`` name, or a timm model name (``--pretrained`` for its published weights).
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["evaluate_accuracy", "load_model_for_eval", "main"]


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, loader, accelerator=None, channels_last: bool = False) -> Dict[str, float]:
    """Top-1 accuracy (percent), mean cross-entropy and image count of ``model`` over ``loader``.

    With an ``accelerator`` the loader is expected to be prepared (sharded); predictions are
    gathered from all processes (``gather_for_metrics`` drops the padding of the last batch).
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
    """
    import timm
    from timm_lc.hub import load_pretrained_model, resolve_checkpoint
    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")) or Path(name).is_dir():
        config, _ = resolve_checkpoint(name)
        return load_pretrained_model(name, verify_hash=False), config
    if not timm.is_model(name.split(".")[0]):
        raise ValueError(f"{name!r} is neither a run directory, an hf-hub:/local-dir: name nor a timm model")
    return (load_pretrained_model(name) if pretrained else timm.create_model(name)), {}


def _check_input_fits(model: nn.Module, name: str, data) -> None:
    """The data's images have the channels (and, for a fixed-size model, the size) the model takes."""
    from timm.data import resolve_model_data_config
    config = resolve_model_data_config(model)
    c, h, w = config["input_size"]
    fixed = model.pretrained_cfg.get("fixed_input_size", False)
    if c != data.in_chans or (fixed and (h, w) != (data.img_size, data.img_size)):
        raise ValueError(f"{name} takes {c}x{h}x{w} images, data set {data.name!r} gives {data.in_chans}x"
                         f"{data.img_size}x{data.img_size}; evaluate a model built for this data (a run directory, "
                         f"an hf-hub:/local-dir: checkpoint, or a pretrained tag with --pretrained)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="timm-lc eval", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="run directory, hf-hub:ORG/REPO, local-dir:PATH or a timm model name")
    p.add_argument("--dataset", help="data set (default: the run's); demo, cifar10, cifar100, tinyimagenet, "
                                     "imagenet, a hub id or a local folder")
    p.add_argument("--dataset-path", help="local save_to_disk copy of the data set")
    p.add_argument("--split", help="split to evaluate (default: the data set's test/validation split)")
    p.add_argument("--data-dir", help="datasets cache directory")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-samples", type=int, help="evaluate only the first N images")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--test-shift", type=int, help="demo: max translation of the test digits (default: the run's)")
    p.add_argument("--pretrained", action="store_true", help="timm model name: load its pretrained weights")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from timm_lc.hub import HubError

    from .config import config_from_dict, valid_keys
    from .data import DatasetUnavailableError, build_data, build_eval_loader

    args = _parser().parse_args(argv)
    try:
        model, run_config = load_model_for_eval(args.model, pretrained=args.pretrained)
        recipe = {k: v for k, v in (run_config.get("recipe") or {}).items() if k in valid_keys()}
        values: Dict[str, Any] = dict(recipe, resume=False, overwrite=False)
        for key, value in (("dataset", args.dataset), ("dataset_path", args.dataset_path),
                           ("eval_split", args.split), ("data_dir", args.data_dir),
                           ("max_eval_samples", args.max_samples), ("test_shift", args.test_shift)):
            if value is not None:
                values[key] = value
        if "dataset" not in values:
            raise ValueError(f"{args.model!r} is not a run directory: pass --dataset")
        input_size = model.pretrained_cfg.get("input_size")
        if input_size and not recipe:
            values.setdefault("img_size", int(input_size[-1]))
            if values["dataset"] == "demo":
                values.setdefault("canvas_size", int(input_size[-1]))
        values.update(eval_batch_size=args.batch_size, num_workers=args.num_workers)
        cfg = config_from_dict(values, source="timm-lc eval")
        data = build_data(cfg, with_train=False)
        _check_input_fits(model, args.model, data)
        result = evaluate_accuracy(model.to(args.device), build_eval_loader(data, cfg))
    except (ValueError, FileNotFoundError, DatasetUnavailableError, HubError) as e:
        print(f"timm-lc eval: error: {e}", file=sys.stderr)
        return 2
    result.update(model=args.model, dataset=data.name, split=cfg.eval_split or "default")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model}: top-1 accuracy {result['accuracy']:.2f}% on {result['count']} images of {data.name} "
              f"(loss {result['loss']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
