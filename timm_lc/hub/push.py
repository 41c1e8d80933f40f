"""Publishing a run directory (or a model) to the Hub in one commit, retrying transient failures."""
import inspect
import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar, Union

import torch
from huggingface_hub import CommitOperationAdd, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import http_backoff

from ..errors import HubError
from ..run_dir import CONFIG_NAME, PLOTS_DIR, WEIGHTS_NAME, read_run, save_pretrained
from .card import CARD_NAME, DEFAULT_LICENSE, render_model_card
from .http import hub_error_message, http_status
from .manifest import manifest_entry

__all__ = ["PushResult", "push_to_hub"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
T = TypeVar("T")


@dataclass
class PushResult:
    """Where a push went: repo, branch, commit, files, and the checkpoint's manifest entry."""
    repo_id: str
    revision: str
    commit_oid: str
    commit_url: str
    files: List[str]
    manifest_entry: Dict[str, Any]


def _backoff_default(name: str) -> tuple:
    value = inspect.signature(http_backoff).parameters[name].default
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


# huggingface_hub retries single HTTP requests (``http_backoff``) but not an HfApi call such as
# ``create_commit``; whole calls are retried on exactly what ``http_backoff`` retries by default.
_RETRY_STATUS = _backoff_default("retry_on_status_codes")
_RETRY_ERRORS = _backoff_default("retry_on_exceptions")


def _transient(err: Exception) -> bool:
    return http_status(err) in _RETRY_STATUS if isinstance(err, HfHubHTTPError) else isinstance(err, _RETRY_ERRORS)


def _with_retries(fn: Callable[[], T], max_retries: int, retry_wait: float) -> T:
    """Calls ``fn``, retrying it up to ``max_retries`` times (waits ``retry_wait * 2**attempt`` s) on
    the errors huggingface_hub's ``http_backoff`` retries."""
    attempt = 0
    while True:
        try:
            return fn()
        except (HfHubHTTPError, *_RETRY_ERRORS) as err:
            if not _transient(err) or attempt == max_retries:
                raise
            time.sleep(retry_wait * 2 ** attempt)
            attempt += 1


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
    num_classes, pretrained_cfg with the sleep settings, model_args), a generated model card
    ``README.md`` and ``plots/*.png``. The run is checked completely (config, weights complete
    and matching the architecture) and a token must be available before anything is sent. The
    repo (and branch ``revision``) is created if needed. Everything goes into one commit, so the
    repo holds all of the checkpoint or none of it.

    Args:
        model_or_run_dir: a run directory, or a model first written with :func:`save_pretrained`.
        repo_id: the Hub repo, ``ORG/NAME``.
        private: create the repo private.
        revision: the branch to commit to (default ``main``; created if needed).
        token: the Hugging Face token (default: huggingface_hub's, e.g. ``HF_TOKEN``).
        commit_message: the commit's message.
        license: the license named in the model card.
        model_args: for a model: constructor arguments recorded in config.json.
        extra_config: for a model: extra config.json keys, as in :func:`save_pretrained`.
        model_name: the name recorded in the manifest entry (e.g. ``"lc_resnet20_hebb.c10"``).
        max_retries: retries of each Hub call on a server or network error.
        retry_wait: seconds before the first retry (doubling each time).
        endpoint: the Hub endpoint (default: huggingface_hub's, ``HF_ENDPOINT``).

    Returns:
        A :class:`PushResult`: repo, branch, commit, files and the manifest entry.

    Raises:
        ValueError: a malformed ``repo_id`` or negative retry settings.
        TypeError: ``model_or_run_dir`` is neither a module nor a path.
        HubError: no token, or the Hub refused the push (nothing was committed).
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
    card_bytes = render_model_card(run, repo_id, license).encode()

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
    except (HfHubHTTPError, *_RETRY_ERRORS) as err:
        message = (hub_error_message(err, repo_id, branch, step)
                   or f"{step}: cannot reach the Hub at {api.endpoint} ({err}).")
        if _transient(err):
            message += f" Gave up after {max_retries} retries."
        raise HubError(
            f"{message} The checkpoint is pushed in a single commit, so '{repo_id}' holds none of this push."
        ) from err
    except RuntimeError as err:  # huggingface_hub wraps LFS upload failures in RuntimeError
        cause = " ".join(str(err.__cause__).split())
        raise HubError(f"{step}: {err} Cause: {cause} Nothing was committed to '{repo_id}'.") from err
    files = [op.path_in_repo for op in operations()]
    entry = manifest_entry(run, repo_id, commit.oid, model_name)
    return PushResult(repo_id=repo_id, revision=branch, commit_oid=commit.oid, commit_url=commit.commit_url,
                      files=files, manifest_entry=entry)
