"""The compose stack end to end: build the images, start PostgreSQL, MLflow, a Ray head and two
workers, run a smoke sweep the documented way (``docker-compose run --rm sweep``), check what the
MLflow server and PostgreSQL hold, and take the stack down.

The workers share nothing with each other but the ``shared`` volume: a stage-2 trial that
fine-tunes a checkpoint another worker wrote proves the storage and data design.
Run with ``make test-docker`` (needs a running ``dockerd``; about ten minutes from an empty cache).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest
from _require import REQUIRE_ALL, require_tool
from services import free_port, http_ok

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yaml"
STUDY = "stack"
# A small smoke sweep: 2 + 2 trials of one epoch on a small synthetic dataset, one CPU per trial.
# Both stage-2 trials fine-tune the one best stage-1 checkpoint and run at once, one per worker
# (each worker offers one CPU): one of them reads a checkpoint the other worker wrote.
SWEEP_ARGS = ["search_spaces/quickstart.yaml", "--smoke-test", f"--set=study.name={STUDY}",
              "--set=study.timestamp=false", "--set=data.synthetic.frames=40", "--set=data.synthetic.diw_train=24",
              "--set=data.synthetic.diw_test=8", "--set=fixed.data/size=[32,32]", "--set=resources.cpu=1",
              "--set=stages.diw.top_k=1", "--set=stages.diw.top_k_per_architecture=false"]


def _docker_ready() -> None:
    require_tool("docker", "apt-get install docker.io, then start dockerd")
    require_tool("docker-compose", "apt-get install docker-compose")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        message = "no Docker daemon answers (start it: dockerd &)"
        if os.environ.get(REQUIRE_ALL) == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def _run(*command: str, env: dict[str, str], timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(command[:6])}... exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
                    pytrace=False)
    return done


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    _docker_ready()
    secret_dir = tmp_path_factory.mktemp("secrets")
    for name in ("pg_password", "ray_token"):
        (secret_dir / name).write_text(secrets.token_hex(32) + "\n")
        (secret_dir / name).chmod(0o644)  # the containers' users read them through a bind mount
    port = free_port()
    project = f"depthsweep-test-{secrets.token_hex(3)}"
    env = {**os.environ, "DEPTHSWEEP_SECRETS": str(secret_dir), "MLFLOW_PORT": str(port), "WORKER_CPUS": "1"}
    if subprocess.run(["docker", "image", "inspect", "depthsweep-base:bookworm"], capture_output=True).returncode:
        require_tool("mmdebstrap", "apt-get install mmdebstrap")
        env["DEPTHSWEEP_BASE_FROM"] = "mmdebstrap"  # no registry here: the base comes from Debian packages
    compose = ["docker-compose", "-p", project, "-f", str(COMPOSE)]
    times: dict[str, float] = {}
    started = time.perf_counter()
    _run("docker/build.sh", env=env, timeout=3600)
    times["build"] = time.perf_counter() - started
    try:
        started = time.perf_counter()
        _run(*compose, "up", "-d", "--scale", "worker=2", "postgres", "mlflow", "ray-head", "worker", env=env)
        _wait_for_workers(compose, env, 2)
        times["up"] = time.perf_counter() - started
        started = time.perf_counter()
        sweep = _run(*compose, "run", "--rm", "-T", "sweep", *SWEEP_ARGS, env=env, check=False)
        times["sweep"] = time.perf_counter() - started
        print(f"compose stack: build {times['build']:.0f} s, up {times['up']:.0f} s, sweep {times['sweep']:.0f} s")
        assert sweep.returncode == 0, sweep.stdout[-4000:] + sweep.stderr[-4000:]
        uri = f"http://127.0.0.1:{port}"
        assert http_ok(f"{uri}/health")
        yield {"compose": compose, "env": env, "uri": uri, "output": sweep.stdout + sweep.stderr,
               "secrets": [(secret_dir / n).read_text().strip() for n in ("pg_password", "ray_token")]}
    finally:
        subprocess.run([*compose, "--profile", "job", "down", "-v", "--remove-orphans"], cwd=ROOT, env=env,
                       capture_output=True, timeout=300)


def _wait_for_workers(compose: list[str], env: dict[str, str], count: int, timeout_s: float = 600) -> None:
    """Until ``count`` nodes with CPUs are alive in the cluster (a worker that missed Ray's start-up
    deadline on a busy machine restarts)."""
    probe = ("import ray; ray.init(address='auto', logging_level='ERROR', log_to_driver=False); "
             "print(sum(1 for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU', 0) > 0))")
    deadline = time.monotonic() + timeout_s
    while True:
        done = _run(*compose, "exec", "-T", "ray-head", "python", "-c", probe, env=env, check=False, timeout=120)
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines and lines[-1].isdigit() and int(lines[-1]) >= count:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"fewer than {count} Ray workers alive after {timeout_s:.0f} s: {done.stdout[-500:]}"
                        f"{done.stderr[-1500:]}", pytrace=False)
        time.sleep(3)


def _trial_runs(client, experiment_id: str, stage: str):
    return client.search_runs([experiment_id], filter_string=f"tags.`depthsweep.kind` = 'trial' and tags.stage = '{stage}'")


def test_trials_ran_on_both_workers_with_one_run_each_and_artifacts(stack):
    from mlflow import MlflowClient

    client = MlflowClient(stack["uri"])
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    nyu, diw = _trial_runs(client, experiment.experiment_id, "nyu"), _trial_runs(client, experiment.experiment_id, "diw")
    assert len(nyu) == 2 and len(diw) == 2
    assert len({r.data.tags["ray_node_ip"] for r in nyu + diw}) == 2
    for run in nyu + diw:
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "checkpoint"} <= names, names


def test_stage_two_fine_tunes_a_checkpoint_the_other_worker_wrote(stack):
    from mlflow import MlflowClient

    client = MlflowClient(stack["uri"])
    experiment = client.get_experiment_by_name(STUDY)
    node_of = {r.info.run_id: r.data.tags["ray_node_ip"] for r in _trial_runs(client, experiment.experiment_id, "nyu")}
    diw = _trial_runs(client, experiment.experiment_id, "diw")
    assert all(r.data.params["train/init_checkpoint"].startswith("/shared/ray/") for r in diw)
    assert any(r.data.tags["ray_node_ip"] != node_of[r.data.tags["stage1_run_id"]] for r in diw)


def test_every_trial_is_in_the_study_on_postgresql(stack):
    probe = ("import json, optuna; url = 'postgresql+psycopg://depthsweep@postgres:5432/optuna'; "
             f"print(json.dumps({{s: [t.state.name for t in optuna.load_study(study_name='{STUDY}-' + s, storage=url).trials]"
             " for s in ('nyu', 'diw')}))")
    done = _run(*stack["compose"], "exec", "-T", "ray-head", "with-credentials", "python", "-c", probe, env=stack["env"])
    states = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(states["nyu"]) == 2 and len(states["diw"]) == 2
    assert all(state in ("COMPLETE", "PRUNED", "FAIL") for stage in states.values() for state in stage)


def test_no_secret_in_the_output_or_mlflow(stack):
    from mlflow import MlflowClient

    for secret in stack["secrets"]:
        assert secret not in stack["output"]
    client = MlflowClient(stack["uri"])
    experiment = client.get_experiment_by_name(STUDY)
    for run in client.search_runs([experiment.experiment_id]):
        values = " ".join([*run.data.params.values(), *run.data.tags.values()])
        assert not any(secret in values for secret in stack["secrets"])
