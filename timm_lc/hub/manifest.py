"""The manifest of published checkpoints (``hub/manifest.json``): one checked entry per Hub repo."""
import json
import re
from pathlib import Path
from typing import Any, Dict, Optional, Union

from .._io import write_text_atomic
from ..run_dir import RunDir, as_run
from .card import final_metrics

__all__ = ["MANIFEST_KEYS", "manifest_entry", "load_manifest", "add_to_manifest"]

MANIFEST_KEYS = (
    "repo_id", "revision", "model", "architecture", "num_classes", "input_size", "dataset",
    "recipe", "metrics", "sha256", "num_params",
)


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
        "metrics": final_metrics(run),
        "sha256": run.sha256,
        "num_params": run.num_params,
    }


def manifest_entry(run_dir: Union[str, Path, RunDir], repo_id: str, revision: Optional[str] = None,
                   model_name: Optional[str] = None) -> Dict[str, Any]:
    """The manifest record of a run (a path or a read ``RunDir``) published as ``repo_id`` (keys:
    ``MANIFEST_KEYS``).

    Args:
        run_dir: the run directory, or a ``RunDir`` already read.
        repo_id: the Hub repo it is published as.
        revision: the Hub revision (e.g. a commit id), if any.
        model_name: the timm model name to record, if any.

    Returns:
        The entry, a dict with the keys ``MANIFEST_KEYS``.
    """
    return _entry(as_run(run_dir), repo_id, revision, model_name)


def load_manifest(path: Union[str, Path]) -> Dict[str, Any]:
    """Reads ``hub/manifest.json``: ``{"organization": ORG, "checkpoints": [entry, ...]}``, checked.

    Args:
        path: the manifest file.

    Returns:
        The parsed manifest.

    Raises:
        ValueError: if the manifest is not of that shape, an entry lacks ``MANIFEST_KEYS``, or an
            entry's sha256 is not 64 lowercase hex digits.
    """
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
    """Adds (or replaces, by repo_id) ``entry`` in the manifest at ``path``, written atomically.

    Args:
        entry: a manifest entry (``manifest_entry``).
        path: the existing manifest file.

    Returns:
        The updated manifest.

    Raises:
        ValueError: if the manifest is invalid (see ``load_manifest``), ``entry`` lacks keys, or its
            repo_id is not in the manifest's organization.
    """
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
