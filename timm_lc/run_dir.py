"""The run directory: the one owner of its format (names, write, read, checks, metrics).

A run directory (``timm-lc train``, ``timm-lc convert``) holds ``model.safetensors`` and a timm
``config.json`` (what ``timm.create_model("local-dir:DIR", pretrained=True)`` reads), and may
hold ``metrics.jsonl``, ``recipe.yaml``, ``checkpoints/`` and ``plots/``. Training, the Hub code,
eval, convert and replicate write and read it only through this module. A run's sleep settings
live in one place of config.json: ``pretrained_cfg["sleep"]``, which ``create_model`` gives back
as ``model.sleep_cfg`` (a root ``sleep`` key is read too, when ``pretrained_cfg`` has none).
"""
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ._io import atomic_path
from ._timm_private import save_config_for_hf
from .errors import CorruptCheckpointError, UnknownArchitectureError
from timm_lc_settings.sleep import SleepConfig

__all__ = [
    "WEIGHTS_NAME", "CONFIG_NAME", "METRICS_NAME", "RECIPE_NAME", "CHECKPOINTS_DIR", "PLOTS_DIR", "RUN_FILES",
    "RUN_DIRS", "RunDir", "save_pretrained", "read_run", "as_run", "read_config", "read_metrics", "config_sleep",
    "holds_run", "remove_run_files", "file_sha256", "validate_safetensors", "check_architecture",
    "check_weights_match",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
RECIPE_NAME = "recipe.yaml"
CHECKPOINTS_DIR = "checkpoints"
PLOTS_DIR = "plots"
RUN_FILES = (WEIGHTS_NAME, CONFIG_NAME, METRICS_NAME, RECIPE_NAME)
RUN_DIRS = (CHECKPOINTS_DIR, PLOTS_DIR)
LC_ARCH_PREFIX = "lc_resnet"


# ---------------------------------------------------------------------------------------------
# write
# ---------------------------------------------------------------------------------------------

def save_pretrained(
        model: torch.nn.Module,
        directory: Union[str, Path],
        model_args: Optional[Dict[str, Any]] = None,
        extra_config: Optional[Dict[str, Any]] = None,
) -> Path:
    """Writes ``model.safetensors`` and a timm ``config.json`` into ``directory``, atomically.

    The format is what ``timm.create_model("local-dir:DIR", pretrained=True)`` and
    ``timm-lc push`` read. Each file is written under a temporary name, then renamed.

    Args:
        model: the model to save (its ``pretrained_cfg`` goes to config.json).
        directory: the run directory (created if needed).
        model_args: constructor arguments recorded for timm to rebuild the model.
        extra_config: keys for the root of config.json (e.g. ``metrics``, ``recipe``); ``sleep``
            (a dict or ``SleepConfig``) goes to ``pretrained_cfg["sleep"]`` instead, and a
            ``pretrained_cfg`` dict updates the model's.

    Returns:
        ``directory`` as a Path.

    Raises:
        ValueError: ``sleep`` settings that are invalid, or given for a model without ``sleep_cfg``.
    """
    directory = Path(directory)
    extra_config = _place_sleep(model, dict(extra_config or {}))
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights, config = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    with atomic_path(weights) as tmp_weights, atomic_path(config) as tmp_config:
        save_file(state, str(tmp_weights), metadata={"format": "pt"})
        save_config_for_hf(model, tmp_config, model_config=extra_config, model_args=model_args)
    return directory


def _place_sleep(model: torch.nn.Module, extra_config: Dict[str, Any]) -> Dict[str, Any]:
    """Moves ``extra_config["sleep"]`` (a dict or ``SleepConfig``, checked) to its one place of
    config.json, ``pretrained_cfg["sleep"]``, which timm-lc's models (those with ``sleep_cfg``) read back.

    Raises:
        ValueError: sleep settings for a model that cannot read them back (timm's own
            ``PretrainedCfg`` has no ``sleep`` field, so its config.json would not load).
    """
    if "sleep" not in extra_config:
        return extra_config
    sleep = extra_config.pop("sleep")
    if sleep is None and not hasattr(model, "sleep_cfg"):
        return extra_config  # no settings to record
    if not hasattr(model, "sleep_cfg"):
        raise ValueError(
            f"sleep settings are saved in pretrained_cfg['sleep'], which only timm-lc's models (lc_resnet*, "
            f"lc_converted: they have sleep_cfg) read back; got a {type(model).__name__}")
    if sleep is not None:
        sleep = (sleep if isinstance(sleep, SleepConfig) else SleepConfig.from_dict(sleep)).to_dict()
    extra_config["pretrained_cfg"] = {**(extra_config.get("pretrained_cfg") or {}), "sleep": sleep}
    return extra_config


def config_sleep(config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The sleep settings a config.json records.

    Args:
        config: a parsed config.json.

    Returns:
        ``pretrained_cfg["sleep"]``, else the root ``sleep`` key; None when neither is set.
    """
    sleep = (config.get("pretrained_cfg") or {}).get("sleep")
    return config.get("sleep") if sleep is None else sleep


def holds_run(path: Path) -> bool:
    """Whether ``path`` holds any file or folder a run (or ``timm-lc convert``) writes.

    Args:
        path: a directory (it need not exist).

    Returns:
        True if ``path`` is a directory holding any of ``RUN_FILES`` or ``RUN_DIRS``.
    """
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in RUN_FILES + RUN_DIRS)


def remove_run_files(path: Path) -> None:
    """Removes only what a run writes (``--overwrite``); other files in the directory stay.

    Args:
        path: the run directory; absent run files and folders are skipped.
    """
    path = Path(path)
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        shutil.rmtree(path / name, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------

def _installed_version() -> str:
    try:
        return version("timm-lc")
    except PackageNotFoundError:
        return "(not installed)"


def file_sha256(path: Union[str, Path]) -> str:
    """Hex sha256 of a file (the LFS object id of a weights file on the Hub).

    Args:
        path: the file to hash, read in 1 MiB blocks.

    Returns:
        The 64-digit lowercase hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def validate_safetensors(path: Union[str, Path], origin: Optional[str] = None) -> Dict[str, Tuple[int, ...]]:
    """Checks that ``path`` is a complete safetensors file; returns ``{tensor name: shape}``.

    Reads only the header (safetensors checks that the tensors cover the whole file, which
    catches truncation). Raises :class:`CorruptCheckpointError` naming the file and where it
    came from (``origin``) instead of safetensors' bare "Error while deserializing header".

    Args:
        path: the safetensors file.
        origin: where the file came from, for error messages (e.g. a repo id).

    Returns:
        ``{tensor name: shape}`` of every tensor in the file.

    Raises:
        CorruptCheckpointError: if the file does not exist, is truncated or is not valid safetensors.
    """
    path = Path(path)
    where = f" from {origin}" if origin else ""
    if not path.is_file():
        raise CorruptCheckpointError(f"weights file {path.name}{where} does not exist ({path})")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptCheckpointError(
            f"weights file {path.name}{where} is truncated or not a valid safetensors file "
            f"({path}, {path.stat().st_size} bytes): {err}. Delete it and download it again "
            f"(force_download=True), or re-save the checkpoint."
        ) from err


def check_architecture(architecture: str, origin: Optional[str] = None) -> None:
    """Raises :class:`UnknownArchitectureError` if timm cannot build ``architecture``.

    For ``lc_resnet*`` names the message says that ``import timm_lc`` registers them (plain
    ``timm.create_model`` only says "Unknown model"), or that the installed timm-lc is older
    than the one that wrote the checkpoint.

    Args:
        architecture: a timm model name (config.json's ``architecture``).
        origin: what needs the architecture, for error messages.

    Raises:
        ValueError: if ``architecture`` is not a non-empty string.
        UnknownArchitectureError: if timm has no model registered under ``architecture``.
    """
    if not isinstance(architecture, str) or not architecture:
        raise ValueError(f"expected an architecture name (str), got {architecture!r}")
    if timm.is_model(architecture):
        return
    where = f" (needed by {origin})" if origin else ""
    if architecture.startswith(LC_ARCH_PREFIX):
        raise UnknownArchitectureError(
            f"architecture '{architecture}'{where} is not registered with timm. It is a timm-lc "
            f"model: run `import timm_lc` before `timm.create_model(...)` (importing timm_lc "
            f"registers the lc_resnet* models). timm-lc {_installed_version()} is installed here and does "
            f"not provide it; the checkpoint may need a newer timm-lc "
            f"(registered: {', '.join(timm.list_models(LC_ARCH_PREFIX + '*')) or 'none'})."
        )
    raise UnknownArchitectureError(
        f"architecture '{architecture}'{where} is not registered with timm {timm.__version__}; "
        f"if it comes from a plugin package, import that package first."
    )


def check_weights_match(directory: Path, config: Dict[str, Any], shapes: Dict[str, Tuple[int, ...]],
                         origin: str) -> int:
    """Checks the safetensors tensors against the architecture; returns the parameter count.

    The model is built the way timm will build it when loading the checkpoint (from its
    config.json via ``local-dir:``), on the meta device so that it costs no memory.

    Args:
        directory: the run directory holding config.json.
        config: the parsed config.json (for error messages).
        shapes: ``{tensor name: shape}`` of the weights file (``validate_safetensors``).
        origin: where the checkpoint came from, for error messages.

    Returns:
        The model's parameter count.

    Raises:
        ValueError: if tensors are missing, unexpected or of the wrong shape for the architecture.
    """
    with torch.device("meta"):
        model = timm.create_model(f"local-dir:{directory}", pretrained=False)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append("shape mismatch " + ", ".join(
                f"{k}: expected {expected[k]}, got {shapes[k]}" for k in wrong[:5]))
        raise ValueError(
            f"{WEIGHTS_NAME} of {origin} does not fit '{config['architecture']}' built from "
            f"{CONFIG_NAME} (num_classes={config.get('num_classes')}, "
            f"model_args={config.get('model_args')}): {'; '.join(parts)}"
        )
    return sum(p.numel() for p in model.parameters())


def read_config(path: Path, origin: str) -> Dict[str, Any]:
    """A config.json, checked to be a timm model config (errors name ``origin``).

    Args:
        path: the config.json file.
        origin: where it came from, for error messages.

    Returns:
        The parsed config.

    Raises:
        ValueError: if the file is not readable JSON, or not an object with a string ``architecture``.
    """
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{CONFIG_NAME} of {origin} is not readable JSON ({path}): {err}") from err
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise ValueError(
            f"{CONFIG_NAME} of {origin} is not a timm model config: expected a JSON object with "
            f"'architecture', 'num_classes' and 'pretrained_cfg', got keys "
            f"{sorted(config) if isinstance(config, dict) else type(config).__name__}"
        )
    return config


# ---------------------------------------------------------------------------------------------
# read
# ---------------------------------------------------------------------------------------------

@dataclass
class RunDir:
    """A checked run directory: its config, weights (hash, parameter count), metrics, recipe and plots."""
    directory: Path
    config: Dict[str, Any]
    weights: Path
    sha256: str
    num_params: int
    metrics: List[Dict[str, Any]] = field(default_factory=list)
    recipe_text: Optional[str] = None
    plots: List[Path] = field(default_factory=list)

    @property
    def sleep(self) -> Optional[Dict[str, Any]]:
        """The sleep settings the run's config.json records (``config_sleep``); None when it has none."""
        return config_sleep(self.config)


def read_metrics(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """The records of a run's metrics.jsonl (none if it is absent). A torn last line (a run killed
    mid-write) is skipped; any other line that is not a JSON object is an error naming it.

    Args:
        path: the metrics.jsonl file.

    Returns:
        The records, in file order; empty when the file is absent.

    Raises:
        ValueError: if a line other than a torn last one is not a JSON object.
    """
    path = Path(path)
    records = []
    if not path.is_file():
        return records
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if lineno == len(lines):
                break
            raise ValueError(f"{path}:{lineno} is not a JSON object: {err}") from err
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def as_run(run: Union[str, Path, RunDir]) -> RunDir:
    """A read ``RunDir`` as it is; a path read and checked (``read_run``).

    Args:
        run: a ``RunDir``, or the path of a run directory.

    Returns:
        ``run`` itself if it is a ``RunDir``, else ``read_run(run)``.
    """
    return run if isinstance(run, RunDir) else read_run(run)


def read_run(directory: Union[str, Path]) -> RunDir:
    """Reads and checks a run directory; every problem is found here, before any network call.

    Args:
        directory: the run directory.

    Returns:
        The checked ``RunDir``.

    Raises:
        FileNotFoundError: if ``directory`` is not a directory or lacks model.safetensors or config.json.
        ValueError: if config.json or metrics.jsonl is malformed, or the weights do not fit the architecture.
        UnknownArchitectureError: if timm cannot build the config's architecture.
        CorruptCheckpointError: if model.safetensors is truncated or invalid.
    """
    directory = Path(directory)
    origin = f"run directory {directory}"
    if not directory.is_dir():
        raise FileNotFoundError(f"expected a run directory with {WEIGHTS_NAME} and {CONFIG_NAME}, got {directory}")
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{origin} has no {name}; expected {WEIGHTS_NAME} + {CONFIG_NAME} as written by "
                f"timm_lc.run_dir.save_pretrained (found: {sorted(p.name for p in directory.iterdir())})"
            )
    config = read_config(directory / CONFIG_NAME, origin)
    check_architecture(config["architecture"], origin)
    shapes = validate_safetensors(directory / WEIGHTS_NAME, origin)
    num_params = check_weights_match(directory, config, shapes, origin)
    recipe = directory / RECIPE_NAME
    return RunDir(
        directory=directory,
        config=config,
        weights=directory / WEIGHTS_NAME,
        sha256=file_sha256(directory / WEIGHTS_NAME),
        num_params=num_params,
        metrics=read_metrics(directory / METRICS_NAME),
        recipe_text=recipe.read_text(encoding="utf-8") if recipe.is_file() else None,
        plots=sorted((directory / PLOTS_DIR).glob("*.png")),
    )
