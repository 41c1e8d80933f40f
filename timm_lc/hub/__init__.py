"""Save, publish and load timm-lc checkpoints (safetensors + timm config.json + model card).

A checkpoint is a run directory (``timm_lc.run_dir``: ``model.safetensors`` + a timm
``config.json``, written by :func:`save_pretrained`). :func:`push_to_hub` (``push``) uploads it,
with a generated model card (``card``) and the run's plots, to the Hugging Face Hub in a single
commit, so a repo never holds a partial checkpoint. :func:`load_pretrained_model` (``load``) is
``timm.create_model(name, pretrained=True)`` with checks first, so a missing repo, revision or
file, a truncated download, a corrupt safetensors file or an unregistered architecture each give
a clear error. ``manifest`` keeps the list of published checkpoints (``hub/manifest.json``).
"""
from ..errors import CorruptCheckpointError, HubError, UnknownArchitectureError
from ..run_dir import CONFIG_NAME, WEIGHTS_NAME, check_architecture, file_sha256, save_pretrained, validate_safetensors
from .card import CARD_NAME, DEFAULT_LICENSE, MODEL_CARD_TEMPLATE, PAPER_CITATION, render_model_card
from .load import load_pretrained_model, resolve_checkpoint
from .manifest import MANIFEST_KEYS, add_to_manifest, load_manifest, manifest_entry
from .push import PushResult, push_to_hub

__all__ = [
    "WEIGHTS_NAME", "CONFIG_NAME", "CARD_NAME", "MANIFEST_KEYS", "MODEL_CARD_TEMPLATE", "PAPER_CITATION",
    "HubError", "CorruptCheckpointError", "UnknownArchitectureError", "PushResult",
    "save_pretrained", "push_to_hub", "load_pretrained_model", "resolve_checkpoint",
    "validate_safetensors", "check_architecture", "file_sha256", "render_model_card",
    "manifest_entry", "load_manifest", "add_to_manifest", "DEFAULT_LICENSE",
]
