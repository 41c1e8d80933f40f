"""The model card (README.md) of a published run: architecture, sleep settings, recipe, metrics, citation."""
import math
import string
from pathlib import Path
from typing import Any, Dict, Optional, Union

import yaml

from ..run_dir import METRICS_NAME, PLOTS_DIR, RECIPE_NAME, WEIGHTS_NAME, RunDir, as_run

__all__ = ["CARD_NAME", "DEFAULT_LICENSE", "MODEL_CARD_TEMPLATE", "PAPER_CITATION", "render_model_card",
           "final_metrics"]

CARD_NAME = "README.md"
DEFAULT_LICENSE = "apache-2.0"

PAPER_CITATION = """@inproceedings{pogodin2021towards,
  title     = {Towards Biologically Plausible Convolutional Networks},
  author    = {Pogodin, Roman and Mehta, Yash and Lillicrap, Timothy P. and Latham, Peter E.},
  booktitle = {Advances in Neural Information Processing Systems},
  volume    = {34},
  year      = {2021},
  eprint    = {2106.13031},
  archivePrefix = {arXiv}
}"""

# The model card template (``hub/model_card.md`` in the source tree links to this package file,
# so ``timm-lc push`` works from an installed wheel). ``$name`` fields are filled in by
# :func:`render_model_card` (string.Template, so braces in code blocks need no escaping).
MODEL_CARD_TEMPLATE = (Path(__file__).parents[1] / "model_card.md").read_text(encoding="utf-8")


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "/"))
        else:
            out[name] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any) -> str:
    if value is None:
        return "default"
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"`{value}`" if isinstance(value, str) else str(value)


def final_metrics(run: RunDir) -> Dict[str, Any]:
    """Final metrics: config.json ``metrics`` if the run recorded them, else the last metrics.jsonl record.

    Args:
        run: the run directory, as read by ``read_run``.

    Returns:
        The metrics with nested keys flattened to ``a/b``; from metrics.jsonl only the finite numbers.
        Empty when the run recorded neither.
    """
    final = run.config.get("metrics")
    if isinstance(final, dict) and final:
        return _flatten(final)
    if run.metrics:
        return {k: v for k, v in _flatten(run.metrics[-1]).items() if _is_number(v)}
    return {}


def _results_section(run: RunDir) -> str:
    final = final_metrics(run)
    if not final and not run.metrics:
        return "No metrics were recorded with this run."
    lines = []
    if final:
        lines += ["Final metrics of the run:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in final.items() if _is_number(v) or isinstance(v, str)]
    tracked = sorted({k for r in run.metrics for k, v in _flatten(r).items()
                      if _is_number(v) and ("acc" in k.lower() or "top1" in k.lower() or "snr" in k.lower())})
    if tracked:
        lines += ["", f"Over training ({len(run.metrics)} records in `{METRICS_NAME}`):", "",
                  "| metric | best | last |", "|---|---|---|"]
        for key in tracked:
            values = [v for r in run.metrics if _is_number(v := _flatten(r).get(key))]
            best = min(values) if "loss" in key.lower() else max(values)
            lines.append(f"| {key} | {_fmt(best)} | {_fmt(values[-1])} |")
    return "\n".join(lines).strip()


def _sleep_section(sleep: Optional[Dict[str, Any]]) -> str:
    if not sleep:
        return "None: this checkpoint was trained without sleep-phase weight sharing."
    lines = ["Weight sharing by sleep phases (Pogodin et al. 2021), with these settings:", "",
             "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in sleep.items()]
    return "\n".join(lines)


def _recipe_section(run: RunDir) -> str:
    if run.recipe_text:
        text = run.recipe_text.strip()
    elif run.config.get("recipe"):
        text = yaml.safe_dump(run.config["recipe"], sort_keys=False).strip()
    else:
        return "Not recorded with this run."
    return f"The resolved training configuration (`{RECIPE_NAME}`):\n\n```yaml\n{text}\n```"


def _front_matter(run: RunDir, license: str) -> str:
    meta: Dict[str, Any] = {
        "license": license,
        "library_name": "timm",
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "timm", "timm-lc", "locally-connected", "biologically-plausible"],
    }
    dataset = run.config.get("dataset")
    if isinstance(dataset, str) and "/" in dataset:
        meta["datasets"] = [dataset]
    return yaml.safe_dump(meta, sort_keys=False).strip()


def render_model_card(run_dir: Union[str, Path, RunDir], repo_id: str, license: str = DEFAULT_LICENSE,
                      template: str = MODEL_CARD_TEMPLATE) -> str:
    """The model card (README.md) of a run directory (a path or a read ``RunDir``), from ``template``
    (string.Template fields).

    Args:
        run_dir: the run directory, or a ``RunDir`` already read.
        repo_id: the Hub repo the card is for ('ORG/NAME').
        license: the license identifier for the card's metadata.
        template: a ``string.Template`` with the card's fields.

    Returns:
        The card's Markdown text.
    """
    return _render_card(as_run(run_dir), repo_id, license, template)


def _render_card(run: RunDir, repo_id: str, license: str, template: str) -> str:
    config = run.config
    pretrained_cfg = config.get("pretrained_cfg") or {}
    input_size = pretrained_cfg.get("input_size")
    plots = "\n".join(f"![{p.stem}]({PLOTS_DIR}/{p.name})" for p in run.plots)
    license_text = (f"`{license}`. The weights were trained on `{config.get('dataset')}`; check that data set's "
                    f"terms before commercial use." if config.get("dataset") else f"`{license}`.")
    fields = {
        "front_matter": _front_matter(run, license),
        "title": repo_id.split("/", 1)[-1],
        "repo_id": repo_id,
        "architecture": config["architecture"],
        "num_params": f"{run.num_params / 1e6:.3f} M ({run.num_params:,})",
        "input_size": "x".join(str(s) for s in input_size) if input_size else "not recorded",
        "num_classes": config.get("num_classes", "not recorded"),
        "dataset": f"`{config['dataset']}`" if config.get("dataset") else "not recorded",
        "weights_name": WEIGHTS_NAME,
        "sha256": run.sha256,
        "sleep": _sleep_section(run.sleep),
        "recipe": _recipe_section(run),
        "results": _results_section(run),
        "plots": f"## Plots\n\n{plots}" if plots else "",
        "license": license_text,
        "citation": PAPER_CITATION,
    }
    return string.Template(template).substitute(fields)
