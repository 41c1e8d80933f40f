"""``timm-lc convert``: convert a timm conv model to a locally connected one and save it.

    timm-lc convert resnet18 --input-size 3 64 64 --output runs/resnet18-lc [--pretrained] [--overwrite]
        [--keep-first N] [--keep-1x1] [--include PAT ...] [--exclude PAT ...] [--noise S]
    timm-lc convert resnet18 --input-size 3 224 224 --report-only     # sizes, no allocation

The output is a run directory in the format of a training run (``timm_lc.run_dir.save_pretrained``):
``model.safetensors`` + a timm ``config.json`` of the ``lc_converted`` architecture (the conv
model, input size and selection as model args; settings, whether the weights are pretrained, and
the report under ``lc_conversion``), so
``timm.create_model("local-dir:DIR", pretrained=True)``, ``timm-lc eval DIR`` and ``timm-lc push
DIR`` read it. An existing output directory is refused unless ``--overwrite`` is given.
"""
import argparse
import difflib
import json
import socket
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlparse

__all__ = ["main"]

_SOURCES = ("hf-hub:", "hf_hub:", "local-dir:")


def build_parser() -> argparse.ArgumentParser:
    """The ``timm-lc convert`` parser, built without torch (``--help`` and usage errors answer at once).

    Returns:
        The parser.
    """
    p = argparse.ArgumentParser(prog="timm-lc convert", allow_abbrev=False,
                                description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("model", help="timm model name (e.g. resnet18, resnet18.a1_in1k, hf-hub:org/repo)")
    p.add_argument("--input-size", type=int, nargs=3, required=True, metavar=("C", "H", "W"),
                   help="fixed input size of the LC model")
    p.add_argument("--output", type=Path, help="output run directory (model.safetensors + config.json)")
    p.add_argument("--overwrite", action="store_true", help="replace the run files of an existing --output")
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


def _check_model_name(name: str) -> None:
    import timm
    if name.startswith(_SOURCES) or timm.is_model(name.split(".")[0]):
        return
    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"unknown model {name!r}{hint}; expected a timm model name (timm.list_models()) "
                     f"or hf-hub:ORG/REPO")


def _check_reachable(url: str, what: str) -> None:
    """One quick connection attempt instead of minutes of download retries."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=5).close()
    except OSError as err:
        raise ValueError(f"{what} are not cached and {parsed.hostname}:{port} cannot be reached ({err}); "
                         f"connect to the network, or drop --pretrained") from err


def _check_pretrained_available(name: str) -> None:
    """Fails fast, in one line, when --pretrained weights are neither cached nor downloadable."""
    import timm
    import torch
    from huggingface_hub import constants, try_to_load_from_cache
    what = f"the pretrained weights of {name!r}"
    if name.startswith("local-dir:"):
        return
    if name.startswith(_SOURCES[:2]):
        repo_id, files, url = name.split(":", 1)[1].split("@")[0], ["config.json"], None
    else:
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None or not (cfg.hf_hub_id or cfg.url):
            tags = timm.list_models(name.split(".")[0], pretrained=True, include_tags=True)
            raise ValueError(f"timm has no pretrained weights for {name!r}; tags with weights: "
                             f"{', '.join(tags) or 'none'}")
        repo_id, url = (cfg.hf_hub_id or "").split("@")[0], cfg.url
        files = [cfg.hf_hub_filename or "model.safetensors", "model.safetensors", "pytorch_model.bin"]
    if repo_id:  # timm prefers the Hub copy when there is one
        cached = any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in files)
        server = constants.ENDPOINT
    else:
        cached = (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name).is_file()
        server = url
    if cached:
        return
    if constants.HF_HUB_OFFLINE:
        raise ValueError(f"{what} are not cached and offline mode is on (HF_HUB_OFFLINE=1); download them "
                         f"once while online, or drop --pretrained")
    _check_reachable(server, what)


def _check_output(output: Path, overwrite: bool) -> None:
    if output.is_file():
        raise ValueError(f"--output {str(output)!r} is a file; expected a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"output directory {str(output)!r} already exists and is not empty: pass "
                              f"--overwrite to replace its run files, or choose another --output")


def _convert(args: argparse.Namespace) -> int:
    import timm
    import torch

    from timm_lc.convert import convert_to_lc_, lc_conversion_report, lc_converted_cfg
    from timm_lc.run_dir import remove_run_files, save_pretrained

    kwargs: Dict[str, Any] = {} if args.num_classes is None else {"num_classes": args.num_classes}
    selection = dict(keep_first=args.keep_first, keep_1x1=args.keep_1x1, include=args.include, exclude=args.exclude)
    input_size = tuple(args.input_size)
    _check_model_name(args.model)
    if args.report_only:
        model = timm.create_model(args.model, device="meta", **kwargs)
        report = lc_conversion_report(model, input_size, **selection)
        print(json.dumps(report.to_dict(), indent=2))
        print(report)
        return 0
    if args.output is None:
        raise ValueError("--output is required unless --report-only is given")
    _check_output(args.output, args.overwrite)
    if args.pretrained:
        _check_pretrained_available(args.model)
    model = timm.create_model(args.model, pretrained=args.pretrained, **kwargs)
    # a pretrained tag names trained weights: random weights are recorded under the bare architecture
    base = ".".join(filter(None, (model.pretrained_cfg["architecture"],
                                  model.pretrained_cfg.get("tag") if args.pretrained else None)))
    convert_to_lc_(model, input_size, noise=args.noise, generator=torch.Generator().manual_seed(args.seed),
                   **selection)
    report = model.lc_conversion_report
    model.pretrained_cfg = lc_converted_cfg(model.pretrained_cfg, input_size)
    settings = dict(model=args.model, pretrained=args.pretrained, input_size=list(input_size), noise=args.noise,
                    seed=args.seed, **selection)
    if args.overwrite:
        remove_run_files(args.output)
    save_pretrained(model, args.output, model_args=dict(base=base, input_size=list(input_size), **selection),
                    extra_config={"lc_conversion": dict(settings, report=report.to_dict())})
    print(report)
    if not args.pretrained:
        print(f"the weights are random (an LC copy of {base}'s initialisation, not trained): pass --pretrained "
              f"to start from timm's pretrained weights")
    print(f"saved to {args.output}; load it with timm.create_model('local-dir:{args.output}', pretrained=True)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Runs ``timm-lc convert``.

    Args:
        argv: the command's arguments; None: ``sys.argv[1:]``.

    Returns:
        0 on success, 2 for bad input, an existing output or unreachable weights.
    """
    args = build_parser().parse_args(argv)
    try:
        return _convert(args)
    except (ValueError, TypeError, OSError) as e:  # bad input, existing output, Hub/network (HfHubHTTPError)
        print(f"timm-lc convert: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
