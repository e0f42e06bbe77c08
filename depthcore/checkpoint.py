"""Self-describing checkpoints that load with ``torch.load(..., weights_only=True)``.

A checkpoint is a plain dict: the model's registry name and arguments, the run's
config as a nested dict, the number of completed epochs, that epoch's metrics,
the weights, the optimizer and gradient-scaler states and the RNG states as
tensors. Plain types only, because ``weights_only=True`` (torch's safe loader)
rejects dataclasses and numpy objects.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthcore.errors import DataError, MissingFileError
from depthcore.models import model_from_spec

FORMAT = "depthsweep-checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from, as tensors."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    directory: str | Path,
    *,
    model: nn.Module,
    config: dict[str, Any],
    epoch: int,
    metrics: dict[str, float],
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``directory/checkpoint.pt`` atomically and return its path.

    ``epoch`` counts completed epochs, so resuming starts at epoch index ``epoch``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = getattr(model, "depthcore_spec", None)
    if spec is None:
        raise ValueError("model has no depthcore_spec: build it with depthcore.models.create_model")
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": spec["name"], "args": dict(spec["args"])},
        "config": config,
        "epoch": int(epoch),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_state(),
        "extra": extra or {},
    }
    return _write(payload, directory / FILENAME)


def _write(payload: dict[str, Any], path: Path) -> Path:
    # Write then rename: a trial killed mid-save never leaves a truncated checkpoint.
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def drop_optimizer_state(path: str | Path) -> bool:
    """Rewrite a checkpoint (file or directory) without its optimizer and gradient-scaler states,
    keeping the weights, config, metrics and RNG states: all that a checkpoint kept for its weights
    needs (with Adam the optimizer state is two thirds of the file). Returns whether there was any."""
    path = Path(path)
    path = path / FILENAME if path.is_dir() else path
    payload = load_checkpoint(path)
    if payload["optimizer"] is None and payload["scaler"] is None:
        return False
    _write({**payload, "optimizer": None, "scaler": None}, path)
    return True


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file (or a directory holding ``checkpoint.pt``) safely."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise MissingFileError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:  # torch's reader raises these
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: expected a checkpoint written by torch.save, found one torch cannot read ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path}: expected a depthsweep checkpoint (format={FORMAT!r}), found no such key")
    if payload.get("version") != VERSION:
        raise DataError(f"{path}: expected checkpoint version {VERSION}, found {payload.get('version')}")
    return payload


def model_from_checkpoint(payload: dict[str, Any] | str | Path) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    if not isinstance(payload, dict):
        payload = load_checkpoint(payload)
    model = model_from_spec(payload["model"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()
