"""Faults a sweep meets: resources and services it cannot get (before Ray starts), trials that
all fail, the driver killed with SIGKILL or interrupted with Ctrl-C while trials are pending.

The slow tests run real sweeps (Ray, Optuna SQLite, MLflow SQLite) in a subprocess and kill it
for real; the fast ones check what is refused before any compute.
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
from services import free_port
from sweep_fixtures import TINY_SPEC, finished_trials
from sweep_processes import check_each_trial_once, resume, spec_file, start_sweep, stop_group, wait_for

from sweep.run import main

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str, float]:
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err + captured.out, time.monotonic() - started



# -- refused before Ray starts: one line, exit 2, nothing written --------------------------------

CANNOT_START = [
    ("cpu", {"resources": {"cpu": 64, "gpu": 0}}, [], "resources.cpu: expected at most the"),
    ("address", {}, ["--address", "127.0.0.1:9"], "--address 127.0.0.1:9: expected a Ray cluster listening there"),
    ("address_form", {}, ["--address", "nohost"], "--address: expected HOST:PORT"),
]


@pytest.mark.parametrize("name,changes,extra,message", CANNOT_START, ids=[c[0] for c in CANNOT_START])
def test_what_the_machine_cannot_give_is_refused_in_one_line_before_anything_is_written(
        tmp_path, monkeypatch, capsys, name, changes, extra, message):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    spec = spec_file(tmp_path, name, **changes)
    code, output, seconds = _run(tmp_path, [str(spec), *extra], monkeypatch, capsys)
    assert code == 2, output
    assert message in output
    assert output.strip().count("\n") == 0 and "Traceback" not in output
    assert seconds < 30
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


def test_a_gpu_the_machine_lacks_is_refused(tmp_path, monkeypatch, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = spec_file(tmp_path, "gpu", resources={"cpu": 1, "gpu": 1})
    code, output, _ = _run(tmp_path, [str(spec)], monkeypatch, capsys)
    assert code == 2 and "resources.gpu: expected at most the 0 GPUs of this machine" in output
    assert not (tmp_path / "out").exists()


def test_an_unreachable_mlflow_server_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    spec = spec_file(tmp_path, "nomlflow")
    code, output, seconds = _run(tmp_path, [str(spec)], monkeypatch, capsys)
    assert code == 2, output
    assert "MLflow tracking server http://127.0.0.1:" in output and "no answer" in output
    assert output.strip().count("\n") == 0 and seconds < 30
    assert not (tmp_path / "out" / "nomlflow").exists()


# -- a live cluster: a bounded wait for a node that can run a trial -----------------------------


def _nodes(*answers):
    """A ``nodes()`` callable that answers each list in turn, then the last one again."""
    calls = []

    def nodes():
        calls.append(1)
        return answers[min(len(calls), len(answers)) - 1]
    return nodes, calls


def test_a_cluster_sweep_waits_for_a_node_that_can_run_a_trial_to_join(tmp_path, capsys):
    from sweep.preflight import wait_for_cluster_resources
    from sweep.spec import load_spec

    spec = load_spec(spec_file(tmp_path, "join", resources={"cpu": 2, "gpu": 1}), check_files=False)
    small = {"ip": "10.0.0.1", "cpu": 8.0, "gpu": 0.0}
    nodes, calls = _nodes([small], [small], [small, {"ip": "10.0.0.2", "cpu": 2.0, "gpu": 1.0}])
    wait_for_cluster_resources(spec, "10.0.0.1:6379", nodes, wait_s=30, poll_s=0.01)
    assert len(calls) == 3
    out = capsys.readouterr().out
    assert out.count("waiting up to 30 s for a node with 2 CPU and 1 GPU") == 1 and "10.0.0.1: 8 CPU, 0 GPU" in out


def test_a_cluster_sweep_gives_up_waiting_in_one_line_naming_what_the_nodes_have(tmp_path):
    from sweep.preflight import PreflightError, wait_for_cluster_resources
    from sweep.spec import load_spec

    spec = load_spec(spec_file(tmp_path, "never", resources={"cpu": 1, "gpu": 1}), check_files=False)
    nodes, _ = _nodes([{"ip": "10.0.0.1", "cpu": 1.0, "gpu": 0.0}])
    with pytest.raises(PreflightError) as raised:
        wait_for_cluster_resources(spec, "10.0.0.1:6379", nodes, wait_s=0.05, poll_s=0.01)
    message = str(raised.value)
    assert message.startswith(f"{spec.path}: resources: expected a node with 1 CPU and 1 GPU")
    assert "after waiting 0.05 s (nodes: 10.0.0.1: 1 CPU, 0 GPU)" in message and "\n" not in message


@pytest.mark.slow
def test_resources_no_node_of_a_live_cluster_has_are_refused_after_the_wait_with_nothing_written(tmp_path):
    from services import mlflow_server, ray_cluster

    spec = spec_file(tmp_path, "nogpu", resources={"cpu": 1, "gpu": 1})
    with mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", {}) as uri, ray_cluster(("127.0.0.1",)) as cluster:
        process, log = start_sweep(tmp_path, spec, "sweep.log", ["--address", cluster.address, "--resource-wait", "3"],
                                   env={**cluster.env, "MLFLOW_TRACKING_URI": uri})
        try:
            assert process.wait(timeout=300) == 2, log.read_text()[-3000:]
        finally:
            stop_group(process)
    output = log.read_text()
    assert "Traceback" not in output, output[-3000:]
    (error,) = [line for line in output.splitlines() if line.startswith("error:")]
    assert f"in the Ray cluster at {cluster.address}, found none after waiting 3 s (nodes: " in error
    assert error.count(": 1 CPU, 0 GPU") == 1  # the head, as Ray names it
    assert not (tmp_path / "out" / "nogpu").exists()


# -- --smoke-test on every shipped spec ----------------------------------------------------------

SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_smoke_test_overrides_make_a_valid_one_epoch_spec_of_every_shipped_space(path):
    from sweep.run import smoke_overrides
    from sweep.spec import load_spec

    spec = load_spec(path, check_files=False)
    smoke = load_spec(path, smoke_overrides(spec), check_files=False)
    for stage in smoke.stages:
        assert smoke.max_epochs(stage) == 1
        assert smoke.stages[stage].num_samples == 2
        assert smoke.scheduler.grace_period <= smoke.max_epochs(stage)


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_smoke_test_dry_run_of_every_shipped_space(path, tmp_path, monkeypatch, capsys):
    # Real-data specs too: a dry run needs no data files, and names each one that a real run lacks.
    real = "synthetic" not in yaml.safe_load(path.read_text()).get("data", {})
    monkeypatch.chdir(tmp_path)
    assert main([str(path), "--smoke-test", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "train/epochs: 1" in out
    assert ("# missing: data.nyu_path: no file at" in out) == (real and not (ROOT / "data/nyu/nyu_depth_v2_labeled.mat").is_file())
    first = [json.loads(line)["model/name"] for line in out.splitlines() if line.startswith('{"model/name"')]
    searched = yaml.safe_load(path.read_text())["space"].get("model/name", {}).get("choices", [])
    if searched and len(searched) <= 2:  # the smoke test runs two trials: one per architecture fits
        assert first[:len(searched)] == searched


# -- selection never takes a run that did not end -------------------------------------------------


def test_selection_skips_a_run_left_running(tmp_path):
    from sweep.select import load_study
    from sweep.tracking import TAG_ARCHITECTURE, TAG_KIND, TAG_METRIC, TAG_MODE, TAG_PARENT, TAG_STAGE_PARENT

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("open", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment, tags={TAG_KIND: "parent", TAG_STAGE_PARENT: "nyu", TAG_METRIC: "val/rmse",
                                                 TAG_MODE: "min"}).info.run_id
    runs = {}
    for name, value, end in (("open", 0.1, None), ("killed", 0.2, "KILLED"), ("done", 0.5, "FINISHED")):
        run = client.create_run(experiment, tags={TAG_KIND: "trial", TAG_PARENT: parent, TAG_ARCHITECTURE: "unetpp",
                                                  "depthsweep.trial_key": f"open/nyu/{name}"}).info.run_id
        client.log_metric(run, "val/rmse", value, step=1)
        if end:
            client.set_terminated(run, status=end)
        runs[name] = run
    winners = load_study(f"sqlite:///{tmp_path / 'mlflow.db'}", "open").winners()
    assert winners["nyu"]["unetpp"].run_id == runs["done"]


def _run_one_stage(tmp_path: Path, spec, name: str, trainable):
    """Stage nyu of ``spec`` run in this process (its own Ray runtime, MLflow SQLite store) with ``trainable``."""
    from sweep.tracking import ensure_experiment, start_parent_run
    from sweep.trial import TrialContext
    from sweep.tuner import ray_runtime, run_stage

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = ensure_experiment(name, uri, tmp_path / "artifacts")
    parent = start_parent_run(experiment, "nyu", name, spec.to_dict(), uri, resume=False)
    ctx = TrialContext(spec=spec, stage="nyu", tracking_uri=uri, experiment_id=experiment, parent_run_id=parent,
                       threads=1, study_name=name)
    with ray_runtime(None):
        return run_stage(ctx, tmp_path / "ray", storage_url=f"sqlite:///{tmp_path / 'optuna.db'}", resume=False,
                         trainable=trainable)


# -- every trial fails: exit non-zero, the first error in one line, bounded retries ------------


@pytest.mark.slow
def test_a_stage_whose_trials_all_fail_names_the_first_error_and_retries_a_bounded_number_of_times(tmp_path):
    from sweep.spec import load_spec
    from sweep.tuner import MAX_FAILURES

    spec_path = spec_file(tmp_path, "failing", stages={"nyu": {"num_samples": 2}})
    spec = load_spec(spec_path, check_files=False)
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def failing(config, ctx):  # the fault: a data file a trial reads turns out malformed
        from depthcore.errors import DataError

        (attempts / f"{len(list(attempts.iterdir()))}").touch()
        raise DataError("DIW_train_val.csv:4: expected 9 comma-separated fields, found 3")

    outcome = _run_one_stage(tmp_path, spec, "failing", failing)
    assert not outcome.interrupted and len(outcome.trials) == 2
    assert all(r.error == "DIW_train_val.csv:4: expected 9 comma-separated fields, found 3" for r in outcome.trials)
    assert len(list(attempts.iterdir())) == 2 * (1 + MAX_FAILURES)
    study = optuna.load_study(study_name="failing-nyu", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]


@pytest.mark.slow
def test_ray_keeps_only_the_best_and_the_latest_checkpoint_of_a_trial(tmp_path):
    from sweep.spec import load_spec

    spec = load_spec(spec_file(tmp_path, "disk", stages={"nyu": {"num_samples": 1}}, scheduler={"type": "fifo"}),
                     check_files=False)
    curve = [0.9, 0.5, 0.7, 0.8, 0.6]  # best at epoch 2, the latest at 5

    def five_epochs(config, ctx):
        import ray.tune

        for epoch, value in enumerate(curve, start=1):
            folder = tmp_path / "reported" / str(epoch)
            folder.mkdir(parents=True)
            (folder / "checkpoint.pt").write_bytes(b"x" * 1000)
            ray.tune.report({"val/rmse": value, "epoch": epoch}, checkpoint=ray.tune.Checkpoint.from_directory(folder))

    outcome = _run_one_stage(tmp_path, spec, "disk", five_epochs)
    (record,) = outcome.trials
    kept = sorted(p.name for p in (tmp_path / "ray" / "nyu").glob("*/checkpoint_*"))
    # Ray numbers checkpoints from 0: the best epoch (2) and the latest (5), nothing else.
    assert kept == ["checkpoint_000001", "checkpoint_000004"], kept
    assert record.checkpoint is not None and record.checkpoint.endswith("checkpoint_000001")


# -- SIGKILL of the driver, then --resume -------------------------------------------------------


@pytest.mark.slow
def test_sigkill_of_the_driver_then_resume_counts_every_trial_once(tmp_path, monkeypatch):
    # Trials of 6 short epochs: a few seconds each, so the kill finds one running and others pending.
    spec = spec_file(tmp_path, "killed", stages={"nyu": {"num_samples": 5}}, scheduler={"type": "fifo"},
                     fixed={"data/size": [32, 32], "data/batch_size": 4, "train/epochs": 6,
                            "train/max_batches_per_epoch": 2, "train/device": "cpu"})
    sweep_dir = tmp_path / "out" / "killed"
    process, log = start_sweep(tmp_path, spec, "first.log")
    try:
        wait_for(process, log, lambda: finished_trials(sweep_dir / "optuna.db") >= 2, "two finished trials")
        time.sleep(1)  # into the next trial: it is running when the driver dies
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        stop_group(process)
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    before = {t.number: (t.params, t.value) for t in optuna.load_study(study_name="killed-nyu", storage=storage).trials
              if t.state.is_finished()}
    assert 2 <= len(before) < 5

    assert resume(tmp_path, spec, sweep_dir, monkeypatch) == 0

    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    check_each_trial_once(storage, "killed", uri, sweep_dir)
    after = optuna.load_study(study_name="killed-nyu", storage=storage).trials
    assert {t.number: (t.params, t.value) for t in after if t.number in before} == before  # none rerun
    from sweep.reconcile import latest_snapshot, ray_statuses

    assert len(ray_statuses(latest_snapshot(sweep_dir / "ray" / "nyu"))) == 5


# -- Ctrl-C while trials are pending ---------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_with_pending_trials_is_an_interruption_and_resume_finishes(tmp_path, monkeypatch):
    # Two trials at once on a machine whose CPUs fit one: the second waits PENDING for resources.
    cpus = os.cpu_count() or 1
    spec = spec_file(tmp_path, "pending", resources={"cpu": cpus, "gpu": 0},
                 study={**yaml.safe_load(TINY_SPEC)["study"], "name": "pending", "max_concurrent": 2})
    sweep_dir = tmp_path / "out" / "pending"
    process, log = start_sweep(tmp_path, spec, "first.log")
    try:
        wait_for(process, log, lambda: "started" in log.read_text(), "a trial started")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=300) == 130, log.read_text()[-3000:]
    finally:
        stop_group(process)
    output = log.read_text()
    assert f"--resume {sweep_dir}" in output
    assert not (sweep_dir / "stage1_topk.json").exists()
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pending")
    parents = client.search_runs([experiment.experiment_id], "tags.`depthsweep.kind` = 'parent'")
    assert [p.info.status for p in parents] == ["KILLED"]

    assert resume(tmp_path, spec, sweep_dir, monkeypatch) == 0
    assert (sweep_dir / "stage1_topk.json").is_file()
    parents = client.search_runs([experiment.experiment_id], "tags.`depthsweep.kind` = 'parent'")
    assert sorted(p.info.status for p in parents) == ["FINISHED", "FINISHED"]


def test_ctrl_c_outside_a_stage_closes_the_open_parent_run_killed(tmp_path, monkeypatch, capsys):
    """A KeyboardInterrupt between stages or in data preparation: 130, the parent KILLED, the command."""
    from sweep.record import SweepRecord, write_record
    from sweep.run import interrupted
    from sweep.spec import load_spec
    from sweep.tracking import ensure_experiment, start_parent_run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    spec = load_spec(spec_file(tmp_path, "between"), ["study.max_concurrent=1"], check_files=False)
    uri = f"sqlite:///{(tmp_path / 'out').resolve() / 'mlflow.db'}"
    (tmp_path / "out").mkdir()
    experiment = ensure_experiment("between", uri, tmp_path / "out" / "mlartifacts")
    parent = start_parent_run(experiment, "nyu", "between", spec.to_dict(), uri, resume=False)
    sweep_dir = tmp_path / "out" / "between"
    # In data preparation or while Ray starts: no record yet, nothing to resume.
    assert interrupted(spec, sweep_dir, ["study.max_concurrent=1"]) == 130
    assert "nothing to resume: run the same command again" in capsys.readouterr().out
    # Between stages: the record is there; the parent run is closed KILLED, the command continues it.
    write_record(SweepRecord(dir=sweep_dir, name="between", spec_path=str(spec.path), stages=["nyu", "diw"],
                             optuna_storage=f"sqlite:///{sweep_dir / 'optuna.db'}", tracking_uri=uri,
                             spec=spec.to_dict(), overrides=["study.max_concurrent=1"], ray_storage_path=""))
    assert interrupted(spec, sweep_dir, ["study.max_concurrent=1"]) == 130
    assert MlflowClient(uri).get_run(parent).info.status == "KILLED"
    assert f"--set study.max_concurrent=1 --resume {sweep_dir.resolve()}" in capsys.readouterr().out


@pytest.mark.slow
def test_ctrl_c_during_export_exits_130_and_names_the_command_to_export_again(tiny_sweep, tmp_path):
    from sweep_fixtures import copy_sweep

    sweep_dir, uri = copy_sweep(tiny_sweep, tmp_path)  # a copy: the shared sweep stays as it is
    log = tmp_path / "export.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "sweep.export", str(sweep_dir), "--out", str(tmp_path / "x"),
                                    "--onnx-exporter", "torchscript", "--no-register"],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(process, log, lambda: "[export]" in log.read_text(), "the first winner's export")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "interrupted during the export; the sweep is unchanged" in text
    assert not list((tmp_path / "x").glob(".*.partial"))  # the model being written is not left half-done
    assert f"python -m sweep.export {sweep_dir}" in text
