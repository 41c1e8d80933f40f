"""``timm-lc convert``: convert a timm conv model to a locally connected one and save it.

    timm-lc convert resnet18 --input-size 3 64 64 --output runs/resnet18-lc [--pretrained]
        [--keep-first N] [--keep-1x1] [--include PAT ...] [--exclude PAT ...] [--noise S]
    timm-lc convert resnet18 --input-size 3 224 224 --report-only     # sizes, no allocation

The output directory holds ``model.safetensors`` + timm ``config.json`` (``timm_lc.hub``'s
run-directory format) with the conversion settings and report under ``lc_conversion``;
``load_converted(directory)`` rebuilds the model from it.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import timm
import torch
from safetensors.torch import load_file

from .convert import convert_to_lc, lc_conversion_report
from .hub import CONFIG_NAME, WEIGHTS_NAME, save_pretrained

__all__ = ["main", "load_converted"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="timm-lc convert", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="timm model name (e.g. resnet18, hf-hub:org/repo)")
    p.add_argument("--input-size", type=int, nargs=3, required=True, metavar=("C", "H", "W"),
                   help="fixed input size of the LC model")
    p.add_argument("--output", type=Path, help="output directory (model.safetensors + config.json)")
    p.add_argument("--pretrained", action="store_true", help="start from timm's pretrained conv weights")
    p.add_argument("--num-classes", type=int, default=None, help="classifier size (default: the model's)")
    p.add_argument("--keep-first", type=int, default=0, help="keep the first N convs convolutional")
    p.add_argument("--keep-1x1", action="store_true", help="keep 1x1 convs convolutional")
    p.add_argument("--include", nargs="+", default=None, metavar="PAT", help="only convert matching module names")
    p.add_argument("--exclude", nargs="+", default=None, metavar="PAT", help="keep matching module names")
    p.add_argument("--noise", type=float, default=0.0, help="relative noise around the copied kernels")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise")
    p.add_argument("--report-only", action="store_true", help="print the conversion report, convert nothing")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if not args.report_only and args.output is None:
        print("timm-lc convert: --output is required unless --report-only is given", file=sys.stderr)
        return 2
    kwargs: Dict[str, Any] = {} if args.num_classes is None else {"num_classes": args.num_classes}
    selection = dict(keep_first=args.keep_first, keep_1x1=args.keep_1x1, include=args.include, exclude=args.exclude)
    input_size = tuple(args.input_size)
    if args.report_only:
        model = timm.create_model(args.model, device="meta", **kwargs)
        report = lc_conversion_report(model, input_size, **selection)
        print(json.dumps(report.to_dict(), indent=2))
        print(report)
        return 0
    model = timm.create_model(args.model, pretrained=args.pretrained, **kwargs)
    generator = torch.Generator().manual_seed(args.seed)
    convert_to_lc(model, input_size, noise=args.noise, generator=generator, **selection)
    report = model.lc_conversion_report
    settings = dict(model=args.model, input_size=list(input_size), noise=args.noise, **selection)
    save_pretrained(model, args.output, extra_config={"lc_conversion": dict(settings, report=report.to_dict())})
    print(report)
    print(f"saved to {args.output}")
    return 0


def load_converted(directory: Union[str, Path], device: Union[str, torch.device] = "cpu") -> torch.nn.Module:
    """Rebuilds a model saved by ``timm-lc convert``: architecture on meta, converted, weights assigned.

    Nothing is allocated twice: the conv model and its LC layers live on the meta device until
    the saved tensors are assigned.
    """
    directory = Path(directory)
    config = json.loads((directory / CONFIG_NAME).read_text())
    if "lc_conversion" not in config:
        raise ValueError(f"{directory / CONFIG_NAME} has no 'lc_conversion' entry: not written by timm-lc convert")
    settings = config["lc_conversion"]
    model = timm.create_model(config["architecture"], num_classes=config["num_classes"], device="meta")
    convert_to_lc(model, tuple(settings["input_size"]), keep_first=settings["keep_first"],
                  keep_1x1=settings["keep_1x1"], include=settings["include"], exclude=settings["exclude"])
    state = load_file(str(directory / WEIGHTS_NAME), device=str(device))
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


if __name__ == "__main__":
    sys.exit(main())
