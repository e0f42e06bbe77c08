"""What a sweep leaves on disk; a trial worker killed with SIGKILL while it trains; a lost Ray node.

The fault tests run real sweeps (Ray, Optuna SQLite, MLflow) in a subprocess and kill, as the OOM
killer or a lost machine would, the Ray process that runs a trial (``ray::ImplicitFunc.train``),
or every process of one node of a two-node cluster.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sweep_processes import check_each_trial_once, spec_file, start_sweep, stop_group, wait_for

from depthcore.stages import STAGES
from sweep.reconcile import latest_snapshot, ray_statuses

optuna.logging.set_verbosity(optuna.logging.WARNING)
TRIAL_PROCESS = "ray::ImplicitFunc"
"""The title of the process of a trial's actor: ``...ImplicitFunc.train`` while Ray waits on its next
result, ``...ImplicitFunc`` between two results."""


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


# -- disk: at most two checkpoints a trial, no engine scratch left -----------------------------


def test_a_sweep_keeps_two_checkpoints_a_trial_at_most_and_nothing_of_the_engines_scratch(tiny_sweep):
    ray_dir = tiny_sweep["dir"] / "ray"
    from depthcore.checkpoint import load_checkpoint

    trial_ids: list[str] = []
    checkpoint_bytes = 0
    best_and_latest = 0
    for stage in STAGES:
        snapshot = latest_snapshot(ray_dir / stage)
        assert snapshot is not None, f"no Ray snapshot of stage {stage}"
        trial_ids += ray_statuses(snapshot)
        trial_dirs = [d for d in (ray_dir / stage).iterdir() if d.is_dir()]
        assert trial_dirs
        for trial_dir in trial_dirs:
            checkpoints = sorted(trial_dir.glob("checkpoint_*"))
            assert 1 <= len(checkpoints) <= 2, (trial_dir.name, checkpoints)
            # Only the latest, what a resume continues from, keeps the optimizer state.
            states = [load_checkpoint(c)["optimizer"] is not None for c in checkpoints]
            assert states[-1] and not any(states[:-1]), (trial_dir.name, states)
            best_and_latest += len(checkpoints) == 2
            # The engine's epoch checkpoints and best/ live in a scratch folder, not here.
            assert not (trial_dir / "train").exists(), trial_dir
            checkpoint_bytes = max(checkpoint_bytes, *(_size(c) for c in checkpoints))
    assert best_and_latest >= 1  # a trial whose last epoch was not its best (the tiny sweep has some)
    # The bound: two of the largest checkpoint per trial, plus 1 MB a trial for Ray's records.
    bound = len(trial_ids) * (2 * checkpoint_bytes + 1_000_000)
    assert _size(tiny_sweep["dir"]) <= bound, (_size(tiny_sweep["dir"]), bound)
    # Each trial's scratch folder is gone once the trial ended.
    left = [p.name for p in Path(tempfile.gettempdir()).glob("depthsweep-*") if p.name.split("-")[1] in trial_ids]
    assert left == []


def test_the_checkpoint_each_trial_logs_to_mlflow_holds_weights_without_optimizer_state(tiny_sweep):
    from depthcore.checkpoint import FILENAME, load_checkpoint

    logged = sorted((tiny_sweep["dir"].parent / "mlartifacts").rglob(f"checkpoint/{FILENAME}"))
    assert len(logged) == 6  # every trial of both stages improved at least once
    for path in logged:
        payload = load_checkpoint(path)
        assert payload["optimizer"] is None and payload["state_dict"], path


# -- SIGKILL of a trial worker -------------------------------------------------------------------


def _trial_processes(session: int) -> list[int]:
    """The Ray worker processes of the sweep started in session ``session`` that run a trial now."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            command = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except (OSError, ProcessLookupError):
            continue
        if command.strip() in (TRIAL_PROCESS, f"{TRIAL_PROCESS}.train"):
            found.append(int(entry.name))
    return found


def _reported_epochs(trial_dir: Path) -> list[int]:
    return [int(json.loads(line)["epoch"]) for line in (trial_dir / "result.json").read_text().splitlines() if line]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds Ray's worker processes through /proc")
def test_a_trial_worker_killed_with_sigkill_is_retried_from_its_last_checkpoint(tmp_path):
    spec = spec_file(tmp_path, "workerkill", stages={"nyu": {"num_samples": 2}}, scheduler={"type": "fifo"},
                     fixed={"data/size": [32, 32], "data/batch_size": 4, "train/epochs": 8,
                            "train/max_batches_per_epoch": 2, "train/device": "cpu"})
    sweep_dir = tmp_path / "out" / "workerkill"
    stage_dir = sweep_dir / "ray" / "nyu"
    process, log = start_sweep(tmp_path, spec, "sweep.log")
    try:
        # The first trial has reported a checkpoint and trains on: kill the process that runs it.
        wait_for(process, log, lambda: any(stage_dir.glob("*/checkpoint_*")), "a trial's first checkpoint")
        victims = _trial_processes(process.pid)
        assert len(victims) == 1, victims
        os.kill(victims[0], signal.SIGKILL)
        assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        stop_group(process)
    assert "what it missed" not in log.read_text()  # MLflow was up: the trials logged everything themselves

    raw = json.loads(latest_snapshot(stage_dir).read_text())
    failures = {json.loads(state)["trial_id"]: json.loads(runtime)["num_failures"] for state, runtime in raw["trial_data"]}
    assert sorted(failures.values()) == [0, 1], failures  # one trial retried once (the limit is MAX_FAILURES)
    assert set(ray_statuses(latest_snapshot(stage_dir)).values()) == {"TERMINATED"}
    (retried,) = [trial_id for trial_id, n in failures.items() if n == 1]
    (trial_dir,) = [d for d in stage_dir.iterdir() if d.is_dir() and f"_{retried}_" in d.name]
    epochs = _reported_epochs(trial_dir)
    # From its last checkpoint, not from scratch: no epoch reported twice, and all eight reached.
    assert epochs == sorted(set(epochs)) and epochs[-1] == 8, epochs

    assert not list(Path(tempfile.gettempdir()).glob(f"depthsweep-{retried}-*"))  # the retry cleared the killed one's

    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    states = [t.state for t in optuna.load_study(study_name="workerkill-nyu", storage=storage).trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE]
    # One MLflow run per trial (the retry reopened the killed one), its state agreeing with Optuna's.
    check_each_trial_once(storage, "workerkill", f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}", sweep_dir)


@pytest.mark.slow
def test_a_lost_ray_node_costs_its_trial_a_retry_on_the_remaining_node(tmp_path):
    from services import mlflow_server, ray_cluster

    spec = spec_file(tmp_path, "nodeloss", stages={"nyu": {"num_samples": 2}}, scheduler={"type": "fifo"},
                     fixed={"data/size": [32, 32], "data/batch_size": 4, "train/epochs": 16,
                            "train/max_batches_per_epoch": 2, "train/device": "cpu"},
                     study={"name": "nodeloss", "seed": 3, "max_concurrent": 2, "output_dir": "out",
                            "timestamp": False, "n_startup_trials": 2})
    sweep_dir = tmp_path / "out" / "nodeloss"
    stage_dir = tmp_path / "shared" / "nodeloss" / "nyu"  # Ray's results on the storage every node reaches
    with mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", {}) as uri, ray_cluster() as cluster:
        env = {**cluster.env, "MLFLOW_TRACKING_URI": uri}
        process, log = start_sweep(tmp_path, spec, "sweep.log",
                                   extra_args=["--address", cluster.address, "--storage-path", str(tmp_path / "shared")],
                                   env=env)
        try:
            # One trial on each node, each past its first checkpoint: then the second node is lost. (Sixteen
            # epochs: on a busy machine one trial may run several before the other's first.)
            # (two trial folders with a checkpoint each: one trial alone may hold two, its best and latest)
            wait_for(process, log, lambda: len({c.parent for c in stage_dir.glob("*/checkpoint_*")}) >= 2
                     and _trial_processes(cluster.sessions[1]), "two trials' checkpoints, one trial on the second node")
            os.killpg(cluster.sessions[1], signal.SIGKILL)
            assert process.wait(timeout=900) == 0, log.read_text()[-3000:]
        finally:
            stop_group(process)
        raw = json.loads(latest_snapshot(stage_dir).read_text())
        failures = sorted(json.loads(runtime)["num_failures"] for _, runtime in raw["trial_data"])
        assert failures == [0, 1], failures
        assert set(ray_statuses(latest_snapshot(stage_dir)).values()) == {"TERMINATED"}
        for trial_dir in (d for d in stage_dir.iterdir() if d.is_dir()):
            epochs = _reported_epochs(trial_dir)
            assert epochs == sorted(set(epochs)) and epochs[-1] == 16, (trial_dir.name, epochs)
        storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
        states = [t.state for t in optuna.load_study(study_name="nodeloss-nyu", storage=storage).trials]
        assert states == [TrialState.COMPLETE, TrialState.COMPLETE]
