"""Atomic training checkpoints with exact resume and last-k retention, on top of Accelerate.

A checkpoint is ``checkpoints/step_<8-digit step>/``: Accelerate's ``save_state`` (model safetensors,
optimiser, the registered scheduler / SleepPhase / EMA, grad scaler and every process's RNG
states) plus ``trainer_state.json`` (step, epoch, data position). It is written under a
temporary name and renamed when complete, so a run killed at any moment leaves either the
whole checkpoint or none; ``trainer_state.json`` is written last and marks completeness.
Explicit directory names are used (no automatic naming, so no save-iteration counter to fix
after ``load_state``).
"""
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from .._io import atomic_path
from ..run_dir import CHECKPOINTS_DIR

__all__ = ["CHECKPOINTS_DIR", "TRAINER_STATE", "list_checkpoints", "latest_checkpoint", "save_checkpoint",
           "load_checkpoint", "prune_checkpoints", "remove_partial_checkpoints"]

TRAINER_STATE = "trainer_state.json"
_PREFIX = "step_"


def _name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def list_checkpoints(run_dir: os.PathLike) -> List[Tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first, as ``(step, path)``.

    Args:
        run_dir: the run directory (its ``checkpoints/`` is searched).

    Returns:
        ``(step, path)`` of every ``step_<n>`` directory holding ``trainer_state.json``, by step;
        empty when there is none.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    found = []
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(_PREFIX) and path.name[len(_PREFIX):].isdigit() \
                    and (path / TRAINER_STATE).is_file():
                found.append((int(path.name[len(_PREFIX):]), path))
    return sorted(found)


def latest_checkpoint(run_dir: os.PathLike) -> Optional[Path]:
    """The newest complete checkpoint of a run, the one ``--resume`` restores.

    Args:
        run_dir: the run directory.

    Returns:
        The checkpoint directory with the highest step, or None when the run has none.
    """
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def remove_partial_checkpoints(run_dir: os.PathLike) -> None:
    """Deletes leftovers of checkpoints interrupted while being written (main process only).

    Args:
        run_dir: the run directory; every hidden directory (``.step_<n>.tmp``/``.old``) under its
            ``checkpoints/`` is removed.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(".") and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def prune_checkpoints(run_dir: os.PathLike, keep: int) -> None:
    """Keeps the newest ``keep`` complete checkpoints (main process only).

    Args:
        run_dir: the run directory.
        keep: number of newest complete checkpoints to keep; 0 or less keeps them all.
    """
    for _, path in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(accelerator, run_dir: os.PathLike, step: int, trainer_state: Dict[str, Any],
                    keep: int = 2) -> Path:
    """Saves the full training state of all processes at ``step``, atomically; returns its directory.

    Call it on every process (it waits for all of them); only the main process writes the trainer
    state, renames the checkpoint into place (replacing one of the same step) and prunes old ones.

    Args:
        accelerator: the run's ``Accelerator`` (its ``save_state`` writes model, optimiser and RNG states).
        run_dir: the run directory.
        step: the optimiser step, which names the checkpoint.
        trainer_state: the loop's counters (epoch, data position), stored with ``step`` in ``trainer_state.json``.
        keep: number of newest complete checkpoints to keep; 0 or less keeps them all.

    Returns:
        The checkpoint directory, ``checkpoints/step_<8-digit step>``.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    final = root / _name(step)
    tmp = root / f".{_name(step)}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(tmp / TRAINER_STATE, dict(trainer_state, step=step))
        if final.exists():  # re-saving a step (e.g. a resumed, finished run): swap the old one out first
            old = root / f".{_name(step)}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        prune_checkpoints(run_dir, keep)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: os.PathLike) -> Dict[str, Any]:
    """Restores everything ``save_checkpoint`` saved (call after ``prepare`` and the registrations);
    returns the trainer state.

    Args:
        accelerator: the run's ``Accelerator``, with the model, optimiser and stateful objects registered.
        path: the checkpoint directory.

    Returns:
        The contents of its ``trainer_state.json`` (``step``, ``epoch``, data position).

    Raises:
        FileNotFoundError: if ``path`` holds no ``trainer_state.json`` (not a complete checkpoint).
        ValueError: if Accelerate cannot load the state into this run (e.g. a different model).
    """
    path = Path(path)
    state_file = path / TRAINER_STATE
    if not state_file.is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a complete checkpoint (no {TRAINER_STATE})")
    try:
        accelerator.load_state(str(path))
    except (RuntimeError, KeyError, ValueError) as err:  # e.g. resumed with flags that change the model
        detail = " ".join(str(err).split())[:300]
        raise ValueError(f"checkpoint {str(path)!r} does not fit this run ({detail}); resume with the run's own "
                         f"settings, or start a new run without --resume") from err
    with open(state_file) as f:
        return json.load(f)
