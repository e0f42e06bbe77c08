"""``sweep.json``: the record of one sweep folder, written once by the sweep and read by
resume, export, report and the end-of-sweep hints — this module is its only reader and writer.

It names the study, the stages run, where Optuna and MLflow keep the study and the resolved
spec. ``$MLFLOW_TRACKING_URI`` takes precedence over the recorded MLflow URI when reading, so a
sweep recorded against a local store can be read through a server that now serves it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.redact import redact

RECORD_FILE = "sweep.json"


class RecordError(RuntimeError):
    """The folder is not a sweep folder, or its record is unreadable (one line, naming the file)."""


@dataclass(frozen=True)
class SweepRecord:
    dir: Path
    """The sweep folder (``runs/sweeps/<study>``)."""
    name: str
    """The study name: the MLflow experiment and the Optuna studies' prefix."""
    spec_path: str
    """The spec file the sweep was started from."""
    stages: list[str]
    """Stages run, in order."""
    optuna_storage: str
    """Optuna storage URL (no credentials: they come from the environment)."""
    tracking_uri: str
    """MLflow tracking URI (``$MLFLOW_TRACKING_URI`` when set at read time)."""
    spec: dict[str, Any] = field(default_factory=dict)
    """The resolved spec (``SweepSpec.to_dict()``)."""
    overrides: list[str] = field(default_factory=list)
    """The ``--set`` items the sweep was started with."""
    ray_storage_path: str = ""
    """Ray's results and checkpoints of this sweep (``--storage-path``/<name>, default ``<dir>/ray``)."""

    @property
    def path(self) -> Path:
        return self.dir / RECORD_FILE

    def optuna_study(self, stage: str) -> str:
        """The Optuna study name of ``stage``."""
        return f"{self.name}-{stage}"


def write_record(record: SweepRecord) -> Path:
    """Write ``sweep.json`` atomically (a kill mid-write leaves the old record or none)."""
    record.dir.mkdir(parents=True, exist_ok=True)
    # URLs are written without their passwords: credentials come from the environment.
    raw = {"name": record.name, "spec": record.spec_path, "stages": record.stages,
           "optuna_storage": redact(record.optuna_storage), "mlflow_tracking_uri": redact(record.tracking_uri),
           "ray_storage_path": record.ray_storage_path, "overrides": record.overrides, "spec_resolved": record.spec}
    write_atomic(record.path, json.dumps(raw, indent=2, default=str))
    return record.path


def write_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a kill mid-write leaves the old file (or none) and a
    hidden temporary file beside it, never a truncated one."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}-", delete=False) as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def is_sweep_dir(folder: str | Path) -> bool:
    return (Path(folder) / RECORD_FILE).is_file()


def require_sqlite_file(what: str, url: str) -> None:
    """A SQLite store that is gone is an error: MLflow and Optuna would silently create an empty one."""
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise RecordError(f"{what} {url}: file not found")


def read_record(sweep_dir: str | Path, *, check_stores: bool = False) -> SweepRecord:
    """The record of ``sweep_dir``; raises :class:`RecordError` naming the folder or file.

    ``check_stores``: also refuse a record whose SQLite stores are gone.
    """
    folder = Path(sweep_dir)
    if not folder.is_dir():
        raise RecordError(f"{folder}: no such sweep folder")
    path = folder / RECORD_FILE
    if not path.is_file():
        raise RecordError(f"{folder}: not a sweep folder (no {RECORD_FILE}); pass runs/sweeps/<study>")
    try:
        raw = json.loads(path.read_text())
        name, storage = raw["name"], str(raw.get("optuna_storage", ""))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise RecordError(f"{path}: not a sweep record ({type(err).__name__}: {err})") from None
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip() or raw.get("mlflow_tracking_uri", "")
    if not uri:
        raise RecordError(f"{path}: no mlflow_tracking_uri, and MLFLOW_TRACKING_URI is not set")
    if check_stores:
        if not storage:
            raise RecordError(f"{path}: no optuna_storage")
        require_sqlite_file("MLflow store", uri)
        require_sqlite_file("Optuna storage", storage)
    return SweepRecord(dir=folder, name=name, spec_path=str(raw.get("spec", "")), stages=list(raw.get("stages", [])),
                       optuna_storage=storage, tracking_uri=uri, spec=raw.get("spec_resolved") or {},
                       overrides=list(raw.get("overrides", [])), ray_storage_path=str(raw.get("ray_storage_path", "")))
