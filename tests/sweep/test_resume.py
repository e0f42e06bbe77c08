"""Ctrl-C during a sweep, then ``--resume``: finished trials are not rerun, one MLflow run per trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState
from sweep_fixtures import TINY_SPEC, finished_trials

from sweep.run import main

pytestmark = pytest.mark.slow



def _resumable_spec() -> str:
    """The tiny spec as a one-stage sweep of 4 trials that run to the end (FIFO: none stopped early)."""
    spec = yaml.safe_load(TINY_SPEC)
    spec["study"]["name"] = "resumable"
    spec["stages"] = {"nyu": {"num_samples": 4}}
    spec["scheduler"] = {"type": "fifo"}
    return yaml.safe_dump(spec)


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _finished(storage: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="resumable-nyu", storage=storage)
    return [t for t in study.trials if t.state in FINISHED]


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    spec = tmp_path / "resumable.yaml"
    spec.write_text(_resumable_spec())
    sweep_dir = tmp_path / "out" / "resumable"
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = (tmp_path / "first.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "sweep.run", str(spec)], cwd=tmp_path, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while finished_trials(sweep_dir / "optuna.db") < 2:
            assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no two finished trials in 10 minutes"
            time.sleep(1)
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert process.wait(timeout=300) == 130, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    output = (tmp_path / "first.log").read_text()
    assert f"--resume {sweep_dir}" in output
    before = {t.number: (t.params, t.value) for t in _finished(storage)}
    assert 2 <= len(before) < 4

    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("resumable")
    runs_before = {r.data.tags["depthsweep.trial_key"]: r for r in
                   client.search_runs([experiment.experiment_id], "tags.`depthsweep.kind` = 'trial'")}
    epochs_before = {key: len(client.get_metric_history(r.info.run_id, "val/rmse")) for key, r in runs_before.items()}

    mp = pytest.MonkeyPatch()
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        mp.delenv(key)
    mp.chdir(tmp_path)
    try:
        assert main([str(spec), "--resume", str(sweep_dir)]) == 0
    finally:
        mp.undo()

    study = optuna.load_study(study_name="resumable-nyu", storage=storage)
    assert all(t.state in FINISHED for t in study.trials)
    # The history is kept: the trials finished before are there unchanged, and no trial was rerun
    # (a rerun would add an Optuna trial with the same parameters).
    assert {t.number: (t.params, t.value) for t in study.trials if t.number in before} == before
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == len(study.trials)
    assert len(study.trials) >= 4

    runs = client.search_runs([experiment.experiment_id], "tags.`depthsweep.kind` = 'trial'")
    keys = [r.data.tags["depthsweep.trial_key"] for r in runs]
    assert len(keys) == len(set(keys))  # exactly one MLflow run per trial
    assert len(runs) == len(study.trials)
    for key, run in runs_before.items():
        if run.info.status == "FINISHED":  # finished before the interrupt: not trained again
            assert len(client.get_metric_history(run.info.run_id, "val/rmse")) == epochs_before[key]
            assert client.get_run(run.info.run_id).info.end_time == run.info.end_time
    parents = client.search_runs([experiment.experiment_id], "tags.`depthsweep.kind` = 'parent'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
