"""Shared by the fault tests: a spec file made from the tiny spec, a sweep run as a user runs it (a
subprocess in a session of its own, so a test can kill it and what Ray started), and the check that
Ray, Optuna and MLflow agree on every trial afterwards."""

from __future__ import annotations

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
from sweep_fixtures import TINY_SPEC

from sweep.run import main

ROOT = Path(__file__).resolve().parents[2]


def spec_file(tmp_path: Path, name: str, **changes) -> Path:
    spec = yaml.safe_load(TINY_SPEC)
    spec["study"]["name"] = name
    for key, value in changes.items():
        spec[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path



def start_sweep(tmp_path: Path, spec: Path, log_name: str, extra_args: list[str] | None = None,
                env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    """``python -m sweep.run SPEC [extra_args]`` in ``tmp_path``, with no MLflow or Ray address from the
    test's environment unless ``env`` sets one."""
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    run_env.update(env or {})
    run_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), run_env.get("PYTHONPATH", "")])
    log = tmp_path / log_name
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "sweep.run", str(spec), *(extra_args or [])], cwd=tmp_path,
                                   env=run_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return process, log


def wait_for(process: subprocess.Popen, log: Path, ready, what: str, limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s
    while not ready():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"not {what} within {limit_s} s"
        time.sleep(0.5)


def stop_group(process: subprocess.Popen) -> None:
    """What the kill left of the run (Ray's agents outlive a SIGKILLed driver): its own session only."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def resume(tmp_path: Path, spec: Path, sweep_dir: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    return main([str(spec), "--resume", str(sweep_dir)])


def check_each_trial_once(storage: str, study: str, uri: str, sweep_dir: Path, stage: str = "nyu") -> None:
    """Every Ray trial once in Optuna and once in MLflow, all ended, the three agreeing on how."""
    from sweep.reconcile import LOST_ATTR, latest_snapshot, ray_statuses

    ray = ray_statuses(latest_snapshot(sweep_dir / "ray" / stage))
    trials = optuna.load_study(study_name=f"{study}-{stage}", storage=storage).trials
    assert all(t.state.is_finished() for t in trials)
    linked = [t for t in trials if LOST_ATTR not in t.user_attrs]
    assert sorted(t.user_attrs["ray_trial_id"] for t in linked) == sorted(ray)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], "tags.`depthsweep.kind` = 'trial'")
    assert all(r.info.status != "RUNNING" for r in runs)
    by_ray = {}
    for run in runs:
        assert run.data.tags["ray_trial_id"] not in by_ray  # one run per trial
        by_ray[run.data.tags["ray_trial_id"]] = run
    for trial in linked:
        run = by_ray[trial.user_attrs["ray_trial_id"]]
        expected = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "stopped_early", TrialState.FAIL: "failed"}
        assert run.data.tags["depthsweep.trial_state"] == expected[trial.state]
        assert ray[trial.user_attrs["ray_trial_id"]] == ("ERROR" if trial.state == TrialState.FAIL else "TERMINATED")
    for trial in trials:
        if LOST_ATTR in trial.user_attrs and trial.user_attrs.get("ray_trial_id") in by_ray:
            assert by_ray[trial.user_attrs["ray_trial_id"]].info.status == "KILLED"
