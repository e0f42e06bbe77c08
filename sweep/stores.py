"""Where a sweep keeps its state, and the checks that it is reachable before anything runs.

Three stores: the Optuna study (``study.storage``, else ``<sweep>/optuna.db``), the MLflow
tracking store (``$MLFLOW_TRACKING_URI``, else ``<output_dir>/mlflow.db``) and Ray's results and
checkpoints (``--storage-path``, else ``<sweep>/ray``). On one machine the defaults are files
beside the sweep. On a cluster only the driver talks to Optuna, but every trial writes to MLflow
and to Ray's storage from whichever node it runs on: MLflow must be a tracking server, and the
storage path a folder every node mounts at the same place.

A store that was asked for and does not answer is an error (one line, exit 2), never a reason
to write to a local file instead: ``sweep.preflight`` checks the MLflow server (and that a
cluster sweep has one) before anything is written, ``storage_error`` words an Optuna storage
that cannot be opened.
"""

from __future__ import annotations

from pathlib import Path

from sweep.redact import redact, redact_text
from sweep.spec import SpecError
from sweep.tracking.store import first_line


def optuna_storage_url(configured: str | None, sweep_dir: Path) -> str:
    """``study.storage``, else the sweep's own SQLite file."""
    return configured or f"sqlite:///{sweep_dir / 'optuna.db'}"


def ray_storage_path(configured: str | None, sweep_dir: Path, recorded: str | None = None) -> Path:
    """Where Ray keeps this sweep's results and checkpoints (absolute): ``<--storage-path>/<sweep name>``,
    else the folder recorded by the sweep being resumed, else ``<sweep>/ray``."""
    if configured:
        return Path(configured).expanduser().resolve() / sweep_dir.name
    return Path(recorded) if recorded else sweep_dir / "ray"


def storage_error(url: str, err: BaseException) -> SpecError:
    """A one-line error for an Optuna storage that cannot be opened (the URL redacted)."""
    hint = ""
    if isinstance(err, ModuleNotFoundError):
        hint = " (install the database driver: pip install 'psycopg[binary]' for postgresql+psycopg://)"
    return SpecError(f"study.storage {redact(url)}: cannot open the Optuna storage: "
                     f"{redact_text(first_line(err), url)}{hint}")
