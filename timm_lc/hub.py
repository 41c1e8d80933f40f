"""Save, publish and load timm-lc checkpoints (safetensors + timm config.json + model card).

A checkpoint is a directory with ``model.safetensors`` and a timm ``config.json`` (the run
directory format written by :func:`save_pretrained`). :func:`push_to_hub` uploads it, with a
generated model card and the run's plots, to the Hugging Face Hub in a single commit, so a repo
never holds a partial checkpoint. :func:`load_pretrained_model` is ``timm.create_model(name,
pretrained=True)`` with checks first, so a missing repo, revision or file, a truncated download,
a corrupt safetensors file or an unregistered architecture each give a clear error that names
what is wrong instead of a raw traceback from deep inside timm or safetensors.
"""
import importlib
import json
import math
import os
import re
import string
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

import timm
import torch
import yaml
from huggingface_hub import CommitOperationAdd, HfApi, get_token, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError

from ._io import write_text_atomic
from .errors import CorruptCheckpointError, HubError, UnknownArchitectureError
from .run_dir import (
    CONFIG_NAME, METRICS_NAME, PLOTS_DIR, RECIPE_NAME, WEIGHTS_NAME, RunDir, check_architecture, file_sha256,
    read_config, read_run, save_pretrained, validate_safetensors)

__all__ = [
    "WEIGHTS_NAME", "CONFIG_NAME", "CARD_NAME", "MANIFEST_KEYS", "MODEL_CARD_TEMPLATE", "PAPER_CITATION",
    "HubError", "CorruptCheckpointError", "UnknownArchitectureError", "PushResult",
    "save_pretrained", "push_to_hub", "load_pretrained_model", "resolve_checkpoint",
    "validate_safetensors", "check_architecture", "file_sha256", "render_model_card",
    "manifest_entry", "load_manifest", "add_to_manifest",
]

CARD_NAME = "README.md"
DEFAULT_LICENSE = "apache-2.0"
MANIFEST_KEYS = (
    "repo_id", "revision", "model", "architecture", "num_classes", "input_size", "dataset",
    "recipe", "metrics", "sha256", "num_params",
)
_RETRY_STATUS = (408, 429, 500, 502, 503, 504)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")

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
MODEL_CARD_TEMPLATE = (Path(__file__).parent / "model_card.md").read_text(encoding="utf-8")


T = TypeVar("T")


def _transient_errors() -> Tuple[type, ...]:
    """Network-level exception types of the HTTP client huggingface_hub uses (version dependent)."""
    errors: List[type] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests.exceptions", "ConnectionError"), ("requests.exceptions", "Timeout")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


_TRANSIENT_ERRORS = _transient_errors()


# ---------------------------------------------------------------------------------------------
# run directory -> model card
# ---------------------------------------------------------------------------------------------

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


def _final_metrics(run: RunDir) -> Dict[str, Any]:
    """Final metrics: config.json ``metrics`` if the run recorded them, else the last metrics.jsonl record."""
    final = run.config.get("metrics")
    if isinstance(final, dict) and final:
        return _flatten(final)
    if run.metrics:
        return {k: v for k, v in _flatten(run.metrics[-1]).items() if _is_number(v)}
    return {}


def _results_section(run: RunDir) -> str:
    final = _final_metrics(run)
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
    (string.Template fields)."""
    return _render_card(_as_run(run_dir), repo_id, license, template)


def _as_run(run_dir: Union[str, Path, RunDir]) -> RunDir:
    return run_dir if isinstance(run_dir, RunDir) else read_run(run_dir)


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


# ---------------------------------------------------------------------------------------------
# publish
# ---------------------------------------------------------------------------------------------

@dataclass
class PushResult:
    """Where a push went: repo, branch, commit, files, and the checkpoint's manifest entry."""
    repo_id: str
    revision: str
    commit_oid: str
    commit_url: str
    files: List[str]
    manifest_entry: Dict[str, Any]


def _hub_error_message(err: Exception, repo_id: str, revision: Optional[str], action: str) -> Optional[str]:
    """A clear message for a huggingface_hub error, or None if it is not one we know."""
    rev = revision or "main"
    if isinstance(err, RevisionNotFoundError):
        return f"{action}: revision '{rev}' does not exist in '{repo_id}'."
    if isinstance(err, RepositoryNotFoundError):
        return (f"{action}: repository '{repo_id}' was not found (or it is private/gated and the token "
                f"used has no access to it).")
    if isinstance(err, EntryNotFoundError) and not isinstance(err, LocalEntryNotFoundError):
        return f"{action}: the file does not exist in '{repo_id}' at revision '{rev}'."
    if isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            return f"{action}: the Hub rejected the token (401). Check it with `hf auth whoami`."
        if status == 403:
            return f"{action}: the token has no write access to '{repo_id}' (403)."
        return f"{action}: the Hub answered {status}: {str(err).splitlines()[0]}"
    return None


def _with_retries(fn: Callable[[], T], max_retries: int, retry_wait: float) -> T:
    """Calls ``fn``; on a server error (5xx, 408, 429) or network error retries up to ``max_retries`` times."""
    for attempt in range(max_retries + 1):
        try:
            return fn()
        except (HfHubHTTPError, *_TRANSIENT_ERRORS) as err:
            status = getattr(getattr(err, "response", None), "status_code", None)
            transient = status in _RETRY_STATUS if isinstance(err, HfHubHTTPError) else True
            if not transient or attempt == max_retries:
                raise
            time.sleep(retry_wait * 2 ** attempt)
    raise AssertionError("unreachable")


def push_to_hub(
        model_or_run_dir: Union[torch.nn.Module, str, Path],
        repo_id: str,
        private: bool = False,
        revision: Optional[str] = None,
        token: Optional[str] = None,
        commit_message: str = "Upload timm-lc checkpoint",
        *,
        license: str = DEFAULT_LICENSE,
        model_args: Optional[Dict[str, Any]] = None,
        extra_config: Optional[Dict[str, Any]] = None,
        model_name: Optional[str] = None,
        max_retries: int = 3,
        retry_wait: float = 2.0,
        endpoint: Optional[str] = None,
) -> PushResult:
    """Publishes a run directory (or a model) to the Hub repo ``repo_id`` in a single commit.

    Uploads ``model.safetensors`` (never pickles), the timm ``config.json`` (architecture,
    num_classes, pretrained_cfg, model_args and the ``sleep`` settings), a generated model card
    ``README.md`` and ``plots/*.png``. The run is checked completely (config, weights complete
    and matching the architecture) and a token must be available before anything is sent. The
    repo (and branch ``revision``) is created if needed; server errors are retried
    ``max_retries`` times with exponential waits from ``retry_wait`` seconds. Everything goes
    into one commit, so the repo holds all of the checkpoint or none of it.

    A model (``nn.Module``) is first written with :func:`save_pretrained` (``model_args``,
    ``extra_config`` as there). ``model_name`` (e.g. ``"lc_resnet20_hebb.c10"``) is recorded in
    the returned manifest entry.
    """
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise ValueError(f"expected repo_id 'ORG/NAME' (letters, digits, '-', '_', '.'), got {repo_id!r}")
    if max_retries < 0 or retry_wait < 0:
        raise ValueError(f"expected max_retries >= 0 and retry_wait >= 0, got {max_retries}, {retry_wait}")
    token = token or get_token()
    if not token:
        raise HubError(
            f"no Hugging Face token to push to '{repo_id}': pass token=... (`--token`), set HF_TOKEN, "
            f"or run `hf auth login`. Nothing was uploaded."
        )
    if isinstance(model_or_run_dir, torch.nn.Module):
        with tempfile.TemporaryDirectory(prefix="timm-lc-push-") as tmp:
            save_pretrained(model_or_run_dir, tmp, model_args=model_args, extra_config=extra_config)
            return _push_run(Path(tmp), repo_id, private, revision, token, commit_message, license,
                             model_name, max_retries, retry_wait, endpoint)
    if not isinstance(model_or_run_dir, (str, Path)):
        raise TypeError(f"expected an nn.Module or a run directory path, got {type(model_or_run_dir).__name__}")
    return _push_run(Path(model_or_run_dir), repo_id, private, revision, token, commit_message, license,
                     model_name, max_retries, retry_wait, endpoint)


def _push_run(run_dir: Path, repo_id: str, private: bool, revision: Optional[str], token: str,
              commit_message: str, license: str, model_name: Optional[str], max_retries: int,
              retry_wait: float, endpoint: Optional[str]) -> PushResult:
    run = read_run(run_dir)
    config_bytes = (json.dumps(run.config, indent=2) + "\n").encode()
    card_bytes = _render_card(run, repo_id, license, MODEL_CARD_TEMPLATE).encode()

    def operations() -> List[CommitOperationAdd]:
        # fresh objects per attempt: huggingface_hub mutates them during a commit
        ops = [CommitOperationAdd(WEIGHTS_NAME, str(run.weights)),
               CommitOperationAdd(CONFIG_NAME, config_bytes),
               CommitOperationAdd(CARD_NAME, card_bytes)]
        ops += [CommitOperationAdd(f"{PLOTS_DIR}/{p.name}", str(p)) for p in run.plots]
        return ops

    api = HfApi(endpoint=endpoint, token=token)
    branch = revision or "main"
    step = f"pushing {run_dir} to '{repo_id}'"
    try:
        _with_retries(lambda: api.create_repo(repo_id, private=private, exist_ok=True), max_retries, retry_wait)
        if branch != "main":
            _with_retries(lambda: api.create_branch(repo_id, branch=branch, exist_ok=True), max_retries, retry_wait)
        commit = _with_retries(
            lambda: api.create_commit(repo_id, operations(), commit_message=commit_message, revision=branch),
            max_retries, retry_wait)
    except (HfHubHTTPError, *_TRANSIENT_ERRORS) as err:
        message = _hub_error_message(err, repo_id, branch, step) or f"{step}: {err}"
        status = getattr(getattr(err, "response", None), "status_code", None)
        if not isinstance(err, HfHubHTTPError) or status in _RETRY_STATUS:
            message += f" Gave up after {max_retries} retries."
        raise HubError(
            f"{message} The checkpoint is pushed in a single commit, so '{repo_id}' holds none of this push."
        ) from err
    except RuntimeError as err:  # huggingface_hub wraps LFS upload failures in RuntimeError
        cause = " ".join(str(err.__cause__).split())
        raise HubError(f"{step}: {err} Cause: {cause} Nothing was committed to '{repo_id}'.") from err
    files = [op.path_in_repo for op in operations()]
    entry = _entry(run, repo_id, commit.oid, model_name)
    return PushResult(repo_id=repo_id, revision=branch, commit_oid=commit.oid, commit_url=commit.commit_url,
                      files=files, manifest_entry=entry)


# ---------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------

def _split_revision(hub_id: str) -> Tuple[str, Optional[str]]:
    repo_id, _, revision = hub_id.partition("@")
    return repo_id, revision or None


def _download(repo_id: str, filename: str, revision: Optional[str], cache_dir: Optional[Union[str, Path]],
              name: str) -> Path:
    """hf_hub_download with the Hub's errors turned into clear :class:`HubError` messages."""
    action = f"loading {name}"
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
    except LocalEntryNotFoundError as err:
        raise HubError(
            f"{action}: {filename} of '{repo_id}' (revision {revision or 'main'}) is not in the local "
            f"cache and the Hub cannot be reached (offline mode HF_HUB_OFFLINE=1, or no network). "
            f"Download it once while online."
        ) from err
    except (HfHubHTTPError, EntryNotFoundError) as err:
        message = _hub_error_message(err, repo_id, revision, action) or f"{action}: {err}"
        if isinstance(err, EntryNotFoundError):
            message = f"{action}: '{repo_id}' has no {filename} at revision '{revision or 'main'}'."
        raise HubError(message) from err
    except OSError as err:
        if "Consistency check failed" in str(err):
            raise CorruptCheckpointError(
                f"{action}: the download of {filename} from '{repo_id}' was truncated ({err}). "
                f"Retry; nothing incomplete was kept in the cache."
            ) from err
        raise


def _check_cached_blob(path: Path, origin: str) -> None:
    """The Hub cache stores an LFS file under its sha256: re-hash to catch corruption at rest."""
    blob = Path(os.path.realpath(path)).name
    if re.fullmatch(r"[0-9a-f]{64}", blob) and file_sha256(path) != blob:
        raise CorruptCheckpointError(
            f"{path.name} from {origin} is corrupt: its sha256 differs from the Hub's ({blob}). "
            f"Download it again with force_download=True ({path})."
        )


def resolve_checkpoint(name: Union[str, Path], cache_dir: Optional[Union[str, Path]] = None,
                       verify_hash: bool = True) -> Tuple[Dict[str, Any], Optional[Path]]:
    """Finds, downloads (cached) and checks a checkpoint; returns ``(config, weights path)``.

    ``name`` is ``hf-hub:ORG/NAME[@REV]``, ``local-dir:DIR``, a run directory, or a registered
    ``architecture[.tag]``. For a registered name whose weights come from a URL, the weights path
    is None. ``verify_hash`` re-hashes a Hub download against its sha256 (catches corruption at rest).
    Raises :class:`HubError` subclasses (or FileNotFoundError for a missing directory) with
    messages naming the repo, revision or file.
    """
    name = str(name)
    if name.startswith("hf-hub:") or name.startswith("hf_hub:"):
        repo_id, revision = _split_revision(name.split(":", 1)[1])
        config_path = _download(repo_id, CONFIG_NAME, revision, cache_dir, name)
        config = read_config(config_path, name)
        check_architecture(config["architecture"], name)
        weights = _download(repo_id, WEIGHTS_NAME, revision, cache_dir, name)
        if verify_hash:
            _check_cached_blob(weights, name)
    elif name.startswith("local-dir:") or os.path.isdir(name):
        directory = Path(name.split(":", 1)[1] if name.startswith("local-dir:") else name)
        if not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"loading {name}: expected {directory / CONFIG_NAME} (a timm-lc run directory)")
        config = read_config(directory / CONFIG_NAME, name)
        check_architecture(config["architecture"], name)
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"loading {name}: expected weights {weights}; timm-lc checkpoints are safetensors")
    else:
        architecture = name.split(".", 1)[0]
        check_architecture(architecture, name)
        published = [n for n in timm.list_models(architecture, include_tags=True)
                     if getattr(timm.models.get_pretrained_cfg(n), "hf_hub_id", None)]
        try:
            cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
        except RuntimeError as err:
            raise HubError(f"loading {name}: no such pretrained tag; tags with weights: "
                           f"{', '.join(published) or 'none'}") from err
        config = {"architecture": architecture, "num_classes": cfg.num_classes, "pretrained_cfg": cfg.to_dict()}
        weights = None
        if not (cfg.hf_hub_id or cfg.url or cfg.file):
            raise HubError(
                f"loading {name}: no pretrained weights are registered for it (timm would silently use a "
                f"random init); tags with weights: {', '.join(published) or 'none'}. Load a run directory "
                f"with local-dir:PATH or a Hub repo with hf-hub:ORG/NAME instead."
            )
        if cfg.hf_hub_id:
            repo_id, revision = _split_revision(cfg.hf_hub_id)
            weights = _download(repo_id, cfg.hf_hub_filename or WEIGHTS_NAME, revision, cache_dir, name)
            if verify_hash:
                _check_cached_blob(weights, name)
    if weights is not None and weights.suffix == ".safetensors":
        validate_safetensors(weights, name)
    return config, weights


def load_pretrained_model(name: Union[str, Path], pretrained: bool = True,
                          cache_dir: Optional[Union[str, Path]] = None, verify_hash: bool = True,
                          **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model(name, pretrained=...)`` with clear errors for every way loading can fail.

    ``name`` as in :func:`resolve_checkpoint` (a bare run directory is read as ``local-dir:``).
    The checkpoint is resolved and checked first (repo, revision, files, safetensors integrity,
    architecture registered), then timm builds the model from the same cached files, so timm's
    own ``hf-hub:``/``local-dir:`` loading is what runs. ``kwargs`` go to timm.create_model.
    """
    name = str(name)
    if not name.startswith(("hf-hub:", "hf_hub:", "local-dir:")) and os.path.isdir(name):
        name = f"local-dir:{name}"
    if pretrained:
        resolve_checkpoint(name, cache_dir=cache_dir, verify_hash=verify_hash)
    else:
        source = name.split(":", 1)[0] if ":" in name else None
        if source is None:
            check_architecture(name.split(".", 1)[0], name)
    try:
        return timm.create_model(name, pretrained=pretrained, cache_dir=cache_dir, **kwargs)
    except SafetensorError as err:  # the file changed between the check and timm's load
        raise CorruptCheckpointError(f"loading {name}: {WEIGHTS_NAME} is not valid safetensors: {err}") from err
    except RuntimeError as err:
        if str(err).startswith("Unknown model"):
            check_architecture(str(err)[len("Unknown model ("):-1], name)
        raise


# ---------------------------------------------------------------------------------------------
# manifest of published checkpoints (hub/manifest.json)
# ---------------------------------------------------------------------------------------------

def _entry(run: RunDir, repo_id: str, revision: Optional[str], model_name: Optional[str]) -> Dict[str, Any]:
    config = run.config
    pretrained_cfg = config.get("pretrained_cfg") or {}
    return {
        "repo_id": repo_id,
        "revision": revision,
        "model": model_name,
        "architecture": config["architecture"],
        "num_classes": config.get("num_classes"),
        "input_size": list(pretrained_cfg["input_size"]) if pretrained_cfg.get("input_size") else None,
        "dataset": config.get("dataset"),
        "recipe": config.get("recipe"),
        "metrics": _final_metrics(run),
        "sha256": run.sha256,
        "num_params": run.num_params,
    }


def manifest_entry(run_dir: Union[str, Path, RunDir], repo_id: str, revision: Optional[str] = None,
                   model_name: Optional[str] = None) -> Dict[str, Any]:
    """The manifest record of a run (a path or a read ``RunDir``) published as ``repo_id`` (keys:
    ``MANIFEST_KEYS``)."""
    return _entry(_as_run(run_dir), repo_id, revision, model_name)


def load_manifest(path: Union[str, Path]) -> Dict[str, Any]:
    """Reads ``hub/manifest.json``: ``{"organization": ORG, "checkpoints": [entry, ...]}``, checked."""
    path = Path(path)
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict) or not isinstance(manifest.get("checkpoints"), list) \
            or not isinstance(manifest.get("organization"), str):
        raise ValueError(f"{path}: expected {{'organization': str, 'checkpoints': [...]}}, got {manifest!r:.200}")
    for i, entry in enumerate(manifest["checkpoints"]):
        missing = [k for k in MANIFEST_KEYS if k not in entry]
        if missing:
            raise ValueError(f"{path}: checkpoint {i} ({entry.get('repo_id')}) lacks keys {missing}")
        if not re.fullmatch(r"[0-9a-f]{64}", str(entry["sha256"])):
            raise ValueError(f"{path}: checkpoint {entry['repo_id']}: sha256 must be 64 hex digits, "
                             f"got {entry['sha256']!r}")
    return manifest


def add_to_manifest(entry: Dict[str, Any], path: Union[str, Path]) -> Dict[str, Any]:
    """Adds (or replaces, by repo_id) ``entry`` in the manifest at ``path``, written atomically."""
    path = Path(path)
    manifest = load_manifest(path)
    missing = [k for k in MANIFEST_KEYS if k not in entry]
    if missing:
        raise ValueError(f"manifest entry lacks keys {missing}; build it with manifest_entry() or push_to_hub()")
    if not entry["repo_id"].startswith(manifest["organization"] + "/"):
        raise ValueError(f"manifest lists checkpoints of '{manifest['organization']}/...', got {entry['repo_id']!r}")
    manifest["checkpoints"] = [e for e in manifest["checkpoints"] if e["repo_id"] != entry["repo_id"]] + [entry]
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")
    return manifest
