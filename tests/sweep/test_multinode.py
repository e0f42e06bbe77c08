"""A two-stage sweep on a real two-node Ray cluster, with the MLflow server and the Optuna study on PostgreSQL.

Everything runs as separate processes on this machine, addressed as a cluster is: a Ray head and a
second Ray node (loopback addresses, one CPU each, token authentication on), ``mlflow server`` on a
PostgreSQL database that the test creates, and the Optuna study in another database of that
server. The sweep is started the way the README says (``python -m sweep.run --address ...``) and
gets the database password only through a PostgreSQL password file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from services import mlflow_server as start_mlflow_server
from services import postgres, ray_cluster
from sweep_fixtures import TINY_SPEC

pytestmark = pytest.mark.slow

STATES = {"completed": optuna.trial.TrialState.COMPLETE, "stopped_early": optuna.trial.TrialState.PRUNED,
          "failed": optuna.trial.TrialState.FAIL}
SAMPLES = {"nyu": 4, "diw": 2}


@pytest.fixture(scope="module")
def cluster_sweep(tmp_path_factory):
    """Runs the sweep once; yields what it left while the services still run."""
    root = tmp_path_factory.mktemp("cluster")
    shared = root / "shared"  # the folder every node mounts (here: the same disk)
    spec = root / "cluster.yaml"
    with postgres() as pg, start_mlflow_server(pg.url("mlflow"), pg.env) as uri, ray_cluster() as cluster:
        spec.write_text(TINY_SPEC.replace(
            "study: {name: tiny, seed: 3, max_concurrent: 1,",
            f"study: {{name: cluster, seed: 3, max_concurrent: 2, storage: '{pg.url('optuna')}',"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MLFLOW_", "RAY_"))}
        env.update(cluster.env, MLFLOW_TRACKING_URI=uri, PGPASSFILE=str(pg.passfile))
        command = [sys.executable, "-m", "sweep.run", str(spec), "--address", cluster.address,
                   "--storage-path", str(shared)]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=1500)
        print(f"two-node sweep: {time.perf_counter() - started:.0f} s")
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        yield {"root": root, "shared": shared, "dir": root / "out" / "cluster", "pg": pg, "uri": uri,
               "cluster": cluster, "output": done.stdout + done.stderr}


def _trial_runs(client: MlflowClient, experiment_id: str, stage: str):
    return client.search_runs([experiment_id], filter_string=f"tags.`depthsweep.kind` = 'trial' and tags.stage = '{stage}'")


def test_trials_ran_on_both_nodes_each_with_one_run_and_its_artifacts(cluster_sweep):
    client = MlflowClient(cluster_sweep["uri"])
    experiment = client.get_experiment_by_name("cluster")
    assert experiment is not None and experiment.artifact_location.startswith("mlflow-artifacts:")
    nodes = set()
    for stage, samples in SAMPLES.items():
        runs = _trial_runs(client, experiment.experiment_id, stage)
        assert len(runs) == samples, stage  # exactly one run per trial
        assert len({r.data.tags["ray_trial_id"] for r in runs}) == samples
        for run in runs:
            nodes.add(run.data.tags["ray_node_ip"])
            names = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert "config.yaml" in names, (stage, names)
            if run.data.tags["depthsweep.trial_state"] != "failed":
                assert "checkpoint" in names, (stage, names)
    assert len(nodes) == 2, nodes  # one CPU per node, two trials at once: both nodes train


def test_the_study_on_postgresql_holds_every_trial_with_its_true_state(cluster_sweep):
    client = MlflowClient(cluster_sweep["uri"])
    experiment = client.get_experiment_by_name("cluster")
    os.environ["PGPASSFILE"] = str(cluster_sweep["pg"].passfile)
    try:
        for stage, samples in SAMPLES.items():
            study = optuna.load_study(study_name=f"cluster-{stage}", storage=cluster_sweep["pg"].url("optuna"))
            trials = study.get_trials(deepcopy=False)
            assert len(trials) == samples
            runs = {r.info.run_id: r for r in _trial_runs(client, experiment.experiment_id, stage)}
            for trial in trials:
                run = runs[trial.user_attrs["mlflow_run_id"]]
                assert STATES[run.data.tags["depthsweep.trial_state"]] == trial.state
    finally:
        del os.environ["PGPASSFILE"]


def test_stage_two_fine_tunes_checkpoints_from_the_shared_storage(cluster_sweep):
    shared, sweep_dir = cluster_sweep["shared"].resolve(), cluster_sweep["dir"]
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert record["ray_storage_path"] == str(shared / "cluster")
    assert record["optuna_storage"] == cluster_sweep["pg"].url("optuna")
    assert record["mlflow_tracking_uri"] == cluster_sweep["uri"]
    topk = json.loads((sweep_dir / "stage1_topk.json").read_text())
    assert topk and all(Path(row["checkpoint"]).is_relative_to(shared / "cluster" / "nyu") for row in topk)
    assert not (sweep_dir / "ray").exists() and not (sweep_dir / "optuna.db").exists()
    client = MlflowClient(cluster_sweep["uri"])
    experiment = client.get_experiment_by_name("cluster")
    stage1_runs = {row["run_id"] for row in topk}
    for run in _trial_runs(client, experiment.experiment_id, "diw"):
        assert run.data.tags["stage1_run_id"] in stage1_runs
        assert Path(run.data.params["train/init_checkpoint"]).is_relative_to(shared / "cluster" / "nyu")


def test_no_secret_in_the_record_mlflow_the_files_or_the_output(cluster_sweep):
    secrets = {"database password": cluster_sweep["pg"].password,
               "Ray token": cluster_sweep["cluster"].env["RAY_AUTH_TOKEN"]}
    for what, secret in secrets.items():
        assert secret not in cluster_sweep["output"], what
        for folder in (cluster_sweep["dir"], cluster_sweep["shared"]):
            for path in folder.rglob("*"):
                if path.is_file():
                    assert secret.encode() not in path.read_bytes(), (what, path)
    client = MlflowClient(cluster_sweep["uri"])
    experiment = client.get_experiment_by_name("cluster")
    for run in client.search_runs([experiment.experiment_id]):
        values = [*run.data.params.values(), *run.data.tags.values()]
        for what, secret in secrets.items():
            assert not any(secret in str(v) for v in values), (what, run.info.run_id)
        spec_yaml = [a.path for a in client.list_artifacts(run.info.run_id) if a.path == "spec.yaml"]
        if spec_yaml:
            local = client.download_artifacts(run.info.run_id, "spec.yaml", str(cluster_sweep["root"]))
            text = Path(local).read_text()
            assert all(secret not in text for secret in secrets.values())


def test_the_driver_joined_the_cluster_instead_of_starting_a_runtime(cluster_sweep):
    assert "Started a local Ray instance" not in cluster_sweep["output"]
