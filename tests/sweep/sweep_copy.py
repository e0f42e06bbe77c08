"""Copy a finished sweep's stores, so a test can log to the copy and leave the shared sweep as it is."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any


def copy_sweep(tiny: dict[str, Any], dst: Path) -> tuple[Path, str]:
    """A copy of study ``tiny`` (MLflow store, its artifacts, Optuna storage, sweep.json) in ``dst``.

    MLflow keeps absolute artifact locations in its tables, so the copied store is pointed at the
    copied artifact folder; otherwise logging to the copy would write into the original's folder.
    Returns the copied sweep folder and the copy's tracking URI.
    """
    src = tiny["dir"].parent
    shutil.copy2(src / "mlflow.db", dst / "mlflow.db")
    shutil.copytree(src / "mlartifacts" / "tiny", dst / "mlartifacts" / "tiny")
    old, new = (src / "mlartifacts").resolve().as_uri(), (dst / "mlartifacts").resolve().as_uri()
    with sqlite3.connect(dst / "mlflow.db") as db:
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (old, new))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
    db.close()
    sweep_dir = dst / "tiny"
    sweep_dir.mkdir()
    shutil.copy2(tiny["dir"] / "optuna.db", sweep_dir / "optuna.db")
    record = json.loads((tiny["dir"] / "sweep.json").read_text())
    record["optuna_storage"] = f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
    # Nothing there: the report must take MLFLOW_TRACKING_URI from the environment instead.
    record["mlflow_tracking_uri"] = f"sqlite:///{(dst / 'nowhere' / 'mlflow.db').resolve()}"
    (sweep_dir / "sweep.json").write_text(json.dumps(record))
    return sweep_dir, f"sqlite:///{(dst / 'mlflow.db').resolve()}"
