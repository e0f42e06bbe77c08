"""Shared by the sweep tests: the tiny spec, and a copy of a finished sweep's stores to log to."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

TINY_SPEC = """
study: {name: tiny, seed: 3, max_concurrent: 1, output_dir: out, timestamp: false, n_startup_trials: 2}
data:
  synthetic: {out: data, frames: 24, height: 48, width: 64, diw_train: 24, diw_test: 8, seed: 0}
fixed:
  data/size: [32, 32]
  data/batch_size: 4
  train/epochs: 2
  train/max_batches_per_epoch: 2
  train/device: cpu
space:
  model/name: {type: categorical, choices: [unetpp_3m, lraspp_3m]}
  optim/lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
stages:
  nyu: {num_samples: 4}
  diw: {num_samples: 2, top_k: 1, space: {optim/lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}}}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
resources: {cpu: 1, gpu: 0}
"""


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


def trial_states(database: Path) -> list[str]:
    """The states of the trials in a sweep's Optuna SQLite file, read-only with sqlite3.

    Not with optuna.load_study: opening RDB storage sets up its schema, and doing that while the
    sweep creates the same database makes one of the two fail.
    """
    if not database.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            return [state for (state,) in db.execute("SELECT state FROM trials")]
    except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
        return []


def finished_trials(database: Path) -> int:
    """Finished trials in a sweep's Optuna SQLite file (``trial_states``)."""
    return sum(state in ("COMPLETE", "PRUNED", "FAIL") for state in trial_states(database))
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            (count,) = db.execute("SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')").fetchone()
        return int(count)
    except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
        return 0
