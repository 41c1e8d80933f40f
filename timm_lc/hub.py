"""Save, publish and load timm-lc checkpoints (safetensors + timm config.json + model card)."""
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def _atomic_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def save_pretrained(
        model: torch.nn.Module,
        directory: Union[str, Path],
        model_args: Optional[Dict[str, Any]] = None,
        extra_config: Optional[Dict[str, Any]] = None,
) -> Path:
    """Writes ``model.safetensors`` and a timm ``config.json`` into ``directory``, atomically.

    The format is what ``timm.create_model("local-dir:DIR", pretrained=True)`` and
    ``timm-lc push`` read. ``extra_config`` keys (e.g. ``sleep``, ``metrics``) go to the root of
    config.json. Each file is written under a temporary name, then renamed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights, config = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    tmp_weights, tmp_config = _atomic_path(weights), _atomic_path(config)
    try:
        save_file(state, str(tmp_weights), metadata={"format": "pt"})
        save_config_for_hf(model, tmp_config, model_config=dict(extra_config or {}), model_args=model_args)
        os.replace(tmp_weights, weights)
        os.replace(tmp_config, config)
    finally:
        for tmp in (tmp_weights, tmp_config):
            tmp.unlink(missing_ok=True)
    return directory
