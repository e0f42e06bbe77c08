"""The MLflow tracking server stops while trials run: the trials finish, their results stay in the
sweep folder, the loss is one line with the ``--resume`` command, and that command logs what MLflow
missed once the server is back. A real ``mlflow server`` on a SQLite store, stopped with SIGTERM
(then SIGKILL) and started again on the same port and store."""

from __future__ import annotations

import json

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from services import free_port, mlflow_server
from sweep_fixtures import finished_trials
from sweep_processes import check_each_trial_once, spec_file, start_sweep, stop_group, wait_for

pytestmark = pytest.mark.slow


def test_mlflow_going_away_mid_sweep_loses_nothing_and_resume_logs_what_it_missed(tmp_path):
    spec = spec_file(tmp_path, "away", stages={"nyu": {"num_samples": 3}}, scheduler={"type": "fifo"},
                     fixed={"data/size": [32, 32], "data/batch_size": 4, "train/epochs": 3,
                            "train/max_batches_per_epoch": 2, "train/device": "cpu"})
    sweep_dir = tmp_path / "out" / "away"
    port, root = free_port(), tmp_path / "mlflow"
    backend = f"sqlite:///{root / 'mlflow.db'}"
    with mlflow_server(backend, {}, port=port, root=root) as uri:
        process, log = start_sweep(tmp_path, spec, "first.log", env={"MLFLOW_TRACKING_URI": uri})
        try:
            wait_for(process, log, lambda: finished_trials(sweep_dir / "optuna.db") >= 1, "a finished trial")
        except BaseException:
            stop_group(process)
            raise
    # The server is gone; the sweep trains its other trials without it, then stops at the stage's end.
    try:
        code = process.wait(timeout=900)
    finally:
        stop_group(process)
    output = log.read_text()
    assert code == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "MLflow is not answering" in output
    (error,) = [line for line in output.splitlines() if line.startswith("error:")]
    assert "cannot log stage nyu's trials from Ray's records" in error and "kept in the sweep folder" in error
    assert f"--resume {sweep_dir}" in output
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    trials = optuna.load_study(study_name="away-nyu", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3  # nothing computed was lost

    with mlflow_server(backend, {}, port=port, root=root) as uri:
        process, log = start_sweep(tmp_path, spec, "resume.log", ["--resume", str(sweep_dir)],
                                   env={"MLFLOW_TRACKING_URI": uri})
        try:
            assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
        finally:
            stop_group(process)
        assert "logged to MLflow what it missed while away" in log.read_text()
        check_each_trial_once(storage, "away", uri, sweep_dir)
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("away")
        runs = client.search_runs([experiment.experiment_id], "tags.`depthsweep.kind` = 'trial'")
        assert len(runs) == 3
        for run in runs:
            steps = sorted(int(m.step) for m in client.get_metric_history(run.info.run_id, "val/rmse"))
            assert steps == [1, 2, 3], (run.data.tags["ray_trial_id"], steps)  # every epoch, once
            assert run.data.metrics["best/epoch"] in (1, 2, 3)
            assert "checkpoint/checkpoint.pt" in {f.path for f in client.list_artifacts(run.info.run_id, "checkpoint")}
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert "away" == record["name"]
