"""Finding, downloading and checking a checkpoint, then loading it with timm (clear errors for each failure)."""
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import timm
import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError
from safetensors import SafetensorError

from ..errors import CorruptCheckpointError, HubError
from ..run_dir import CONFIG_NAME, WEIGHTS_NAME, check_architecture, file_sha256, read_config, validate_safetensors
from .http import hub_error_message

__all__ = ["resolve_checkpoint", "load_pretrained_model"]


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
        message = hub_error_message(err, repo_id, revision, action) or f"{action}: {err}"
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


_Resolved = Tuple[Dict[str, Any], Optional[Path]]


def _resolve_hub(name: str, cache_dir: Optional[Union[str, Path]], verify_hash: bool) -> _Resolved:
    """``hf-hub:ORG/NAME[@REV]``: config.json checked before the weights are downloaded."""
    repo_id, revision = _split_revision(name.split(":", 1)[1])
    config = read_config(_download(repo_id, CONFIG_NAME, revision, cache_dir, name), name)
    check_architecture(config["architecture"], name)
    weights = _download(repo_id, WEIGHTS_NAME, revision, cache_dir, name)
    if verify_hash:
        _check_cached_blob(weights, name)
    return config, weights


def _resolve_local(name: str) -> _Resolved:
    """``local-dir:DIR`` or a bare run directory."""
    directory = Path(name.split(":", 1)[1] if name.startswith("local-dir:") else name)
    if not (directory / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"loading {name}: expected {directory / CONFIG_NAME} (a timm-lc run directory)")
    config = read_config(directory / CONFIG_NAME, name)
    check_architecture(config["architecture"], name)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"loading {name}: expected weights {weights}; timm-lc checkpoints are safetensors")
    return config, weights


def _resolve_registered(name: str, cache_dir: Optional[Union[str, Path]], verify_hash: bool) -> _Resolved:
    """``architecture[.tag]``: the registered pretrained cfg must name weights (Hub, URL or file)."""
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
    if not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise HubError(
            f"loading {name}: no pretrained weights are registered for it (timm would silently use a "
            f"random init); tags with weights: {', '.join(published) or 'none'}. Load a run directory "
            f"with local-dir:PATH or a Hub repo with hf-hub:ORG/NAME instead."
        )
    if not cfg.hf_hub_id:
        return config, None
    repo_id, revision = _split_revision(cfg.hf_hub_id)
    weights = _download(repo_id, cfg.hf_hub_filename or WEIGHTS_NAME, revision, cache_dir, name)
    if verify_hash:
        _check_cached_blob(weights, name)
    return config, weights


def resolve_checkpoint(name: Union[str, Path], cache_dir: Optional[Union[str, Path]] = None,
                       verify_hash: bool = True) -> Tuple[Dict[str, Any], Optional[Path]]:
    """Finds, downloads (cached) and checks a checkpoint.

    Args:
        name: ``hf-hub:ORG/NAME[@REV]``, ``local-dir:DIR``, a run directory, or a registered
            ``architecture[.tag]``.
        cache_dir: the Hugging Face cache to download into (default: huggingface_hub's).
        verify_hash: re-hash a Hub download against its sha256 (catches corruption at rest).

    Returns:
        ``(config, weights path)``; the weights path is None for a registered name whose weights
        come from a URL or a file.

    Raises:
        HubError: (or a subclass) naming the repo, revision or file that cannot be had.
        FileNotFoundError: a directory without config.json or weights.
    """
    name = str(name)
    if name.startswith(("hf-hub:", "hf_hub:")):
        config, weights = _resolve_hub(name, cache_dir, verify_hash)
    elif name.startswith("local-dir:") or os.path.isdir(name):
        config, weights = _resolve_local(name)
    else:
        config, weights = _resolve_registered(name, cache_dir, verify_hash)
    if weights is not None and weights.suffix == ".safetensors":
        validate_safetensors(weights, name)
    return config, weights


def load_pretrained_model(name: Union[str, Path], pretrained: bool = True,
                          cache_dir: Optional[Union[str, Path]] = None, verify_hash: bool = True,
                          **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model(name, pretrained=...)`` with clear errors for every way loading can fail.

    The checkpoint is resolved and checked first (repo, revision, files, safetensors integrity,
    architecture registered), then timm builds the model from the same cached files, so timm's
    own ``hf-hub:``/``local-dir:`` loading is what runs.

    Args:
        name: as in :func:`resolve_checkpoint` (a bare run directory is read as ``local-dir:``).
        pretrained: load the weights (False: only check that the architecture is registered).
        cache_dir: the Hugging Face cache to download into.
        verify_hash: re-hash a Hub download against its sha256.
        **kwargs: passed to ``timm.create_model``.

    Returns:
        The model.

    Raises:
        HubError: the checkpoint cannot be found, downloaded or read (``CorruptCheckpointError``
            for damaged weights, ``UnknownArchitectureError`` for an unregistered architecture).
        FileNotFoundError: a run directory without config.json or weights.
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
