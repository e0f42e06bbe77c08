"""The sweep's driver killed with SIGKILL where a sweep dies in practice — a trial running and one
pending, between the two stages (with the Optuna study on PostgreSQL), during the export — and the
study's PostgreSQL database stopping while trials run; each followed by what the user runs next.

Every test runs real sweeps (Ray, Optuna, MLflow SQLite; PostgreSQL started by ``tests/services``)
in a subprocess and kills it for real. Afterwards Ray, Optuna and MLflow must agree on every
trial, each trial once in each (``check_each_trial_once``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState
from services import postgres, require_postgres
from sweep_fixtures import TINY_SPEC, copy_sweep, trial_states
from sweep_processes import ROOT, check_each_trial_once, resume, spec_file, start_sweep, stop_group, wait_for

from sweep.reconcile import LOST_ATTR, latest_snapshot, ray_statuses

optuna.logging.set_verbosity(optuna.logging.WARNING)
STUDY = yaml.safe_load(TINY_SPEC)["study"]


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def _parents(uri: str, study: str) -> list[str]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(study)
    return [r.info.status for r in client.search_runs([experiment.experiment_id], "tags.`depthsweep.kind` = 'parent'")]


@pytest.mark.slow
def test_sigkill_with_a_trial_running_and_one_pending_then_resume(tmp_path, monkeypatch):
    # Two trials at once on a machine whose CPUs fit one: the second is sampled and waits PENDING.
    spec = spec_file(tmp_path, "pending", resources={"cpu": os.cpu_count() or 1, "gpu": 0},
                     study={**STUDY, "name": "pending", "max_concurrent": 2}, stages={"nyu": {"num_samples": 3}},
                     scheduler={"type": "fifo"},
                     fixed={"data/size": [32, 32], "data/batch_size": 4, "train/epochs": 4,
                            "train/max_batches_per_epoch": 2, "train/device": "cpu"})
    sweep_dir = tmp_path / "out" / "pending"
    process, log = start_sweep(tmp_path, spec, "first.log")
    try:
        wait_for(process, log, lambda: "started" in log.read_text()
                 and trial_states(sweep_dir / "optuna.db").count("RUNNING") == 2, "a trial running, one pending")
        _kill(process)
    finally:
        stop_group(process)
    assert trial_states(sweep_dir / "optuna.db").count("RUNNING") >= 1

    assert resume(tmp_path, spec, sweep_dir, monkeypatch) == 0
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    check_each_trial_once(storage, "pending", uri, sweep_dir)
    assert len(ray_statuses(latest_snapshot(sweep_dir / "ray" / "nyu"))) == 3
    assert "RUNNING" not in _parents(uri, "pending")


@pytest.mark.slow
def test_sigkill_between_the_stages_with_the_study_on_postgresql_then_resume(tmp_path, monkeypatch):
    require_postgres()
    with postgres(("optuna",)) as pg:
        spec = spec_file(tmp_path, "between", study={**STUDY, "name": "between", "storage": pg.url("optuna")})
        sweep_dir = tmp_path / "out" / "between"
        process, log = start_sweep(tmp_path, spec, "first.log", env={"PGPASSFILE": str(pg.passfile)})
        try:
            deadline = time.monotonic() + 600
            while not (sweep_dir / "stage1_topk.json").is_file():  # stage nyu ended: its top-k is written
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)
            _kill(process)
        finally:
            stop_group(process)
        assert "[diw] trial" not in log.read_text()  # no stage-2 trial had started

        monkeypatch.setenv("PGPASSFILE", str(pg.passfile))
        assert resume(tmp_path, spec, sweep_dir, monkeypatch) == 0
        uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
        for stage in ("nyu", "diw"):
            check_each_trial_once(pg.url("optuna"), "between", uri, sweep_dir, stage=stage)
        trials = optuna.load_study(study_name="between-diw", storage=pg.url("optuna")).trials
        assert len(trials) == 2 and all(t.state != TrialState.FAIL for t in trials)
        assert "RUNNING" not in _parents(uri, "between")


@pytest.mark.slow
def test_sigkill_during_the_export_leaves_no_half_written_model_and_the_export_again_completes(tiny_sweep, tmp_path):
    sweep_dir, uri = copy_sweep(tiny_sweep, tmp_path)
    record = (sweep_dir / "sweep.json").read_bytes()
    out = tmp_path / "models"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "sweep.export", str(sweep_dir), "--out", str(out), "--onnx-exporter",
               "torchscript", "--no-register"]
    log = tmp_path / "export.log"
    with log.open("w") as stream:
        process = subprocess.Popen(command, env=env, stdout=stream, stderr=subprocess.STDOUT)
    try:
        wait_for(process, log, lambda: "writing" in log.read_text(), "the first model's files being written")
        _kill(process)
    finally:
        if process.poll() is None:
            process.kill()
    # What the kill left: no model folder without its metrics (the files are written beside it first).
    assert all((folder / "metrics.json").is_file() for folder in out.iterdir() if not folder.name.startswith("."))

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    listed = json.loads((out / "exported.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([Path(e["directory"]).name for e in listed] + ["exported.json"])
    for entry in listed:
        folder = Path(entry["directory"])
        assert {"metrics.json", "MODEL_CARD.md", "model.onnx", "model.pt2", "state_dict.pt"} <= {p.name for p in folder.iterdir()}
        assert json.loads((folder / "metrics.json").read_text())["run_id"] == entry["run_id"]
    assert (sweep_dir / "sweep.json").read_bytes() == record


@pytest.mark.slow
def test_postgresql_stopping_mid_sweep_ends_in_one_line_and_resume_tells_optuna_what_it_missed(tmp_path, monkeypatch):
    require_postgres()
    with postgres(("optuna",)) as pg:
        spec = spec_file(tmp_path, "pgdown", study={**STUDY, "name": "pgdown", "storage": pg.url("optuna")},
                         stages={"nyu": {"num_samples": 4}}, scheduler={"type": "fifo"},
                         fixed={"data/size": [32, 32], "data/batch_size": 4, "train/epochs": 5,
                                "train/max_batches_per_epoch": 2, "train/device": "cpu"})
        sweep_dir = tmp_path / "out" / "pgdown"
        process, log = start_sweep(tmp_path, spec, "first.log", env={"PGPASSFILE": str(pg.passfile)})
        try:
            wait_for(process, log, lambda: "completed after" in log.read_text(), "a finished trial")
            pg.stop()  # as a crashed database host: the next trial is running
            assert process.wait(timeout=300) == 1, log.read_text()[-3000:]
        finally:
            stop_group(process)
        text = log.read_text()
        assert "Traceback" not in text, text[-3000:]
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "the Optuna study's database" in errors[0] and "stopped answering" in errors[0]
        assert pg.password not in text
        assert f"--resume {sweep_dir}" in text
        ended_before = {tid for tid, status in ray_statuses(latest_snapshot(sweep_dir / "ray" / "nyu")).items()
                        if status == "TERMINATED"}
        assert len(ended_before) >= 2  # the trial running at the outage finished too

        pg.start()
        monkeypatch.setenv("PGPASSFILE", str(pg.passfile))
        assert resume(tmp_path, spec, sweep_dir, monkeypatch) == 0
        uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
        check_each_trial_once(pg.url("optuna"), "pgdown", uri, sweep_dir)
        trials = optuna.load_study(study_name="pgdown-nyu", storage=pg.url("optuna")).trials
        # Nothing computed was lost: every trial COMPLETE with its five epochs and its best epoch's value.
        assert len(trials) == 4
        for trial in trials:
            assert trial.state == TrialState.COMPLETE and LOST_ATTR not in trial.user_attrs, trial
            assert sorted(trial.intermediate_values) == [1, 2, 3, 4, 5]
            assert trial.value == min(trial.intermediate_values.values()) == trial.user_attrs["best_value"]
        assert ended_before <= {t.user_attrs["ray_trial_id"] for t in trials}
