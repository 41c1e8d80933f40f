"""``timm-lc eval MODEL_OR_RUN``: top-1 accuracy of a model or a run on a data set.

MODEL_OR_RUN is a run directory (loaded with ``timm.create_model("local-dir:RUN",
pretrained=True)``; its recipe supplies the data set and preprocessing), an ``hf-hub:`` /
``local-dir:`` name, or a timm model name (``--pretrained`` for its published weights).
"""
import argparse
import json
import sys
from typing import Any, Dict, List, Optional

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``timm-lc eval`` parser, built without torch (``--help`` and usage errors answer at once).

    Returns:
        The parser.
    """
    p = argparse.ArgumentParser(prog="timm-lc eval", allow_abbrev=False,
                                description=__doc__.split("\n\n")[0].replace("``", ""))
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
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Runs ``timm-lc eval``.

    Args:
        argv: the command's arguments; None: ``sys.argv[1:]``.

    Returns:
        0 on success, 2 for a usage error, a bad model or run, or an unavailable data set.
    """
    args = build_parser().parse_args(argv)
    import torch
    from timm_lc_settings.train import config_from_dict, valid_keys

    from timm_lc.errors import HubError
    from timm_lc.train.data import DatasetUnavailableError, build_data, build_eval_loader
    from timm_lc.train.evaluate import check_input_fits, evaluate_accuracy, load_model_for_eval

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
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
        check_input_fits(model, args.model, data)
        result = evaluate_accuracy(model.to(device), build_eval_loader(data, cfg))
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
