"""Fixtures for the sweep tests: a real MLflow tracking server in a subprocess, and a tiny finished sweep."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from services import free_port, stop_group
from sweep_fixtures import TINY_SPEC

SERVER_START_TIMEOUT_S = 120  # uvicorn + the MLflow app import take ~20 s on 2 busy cores


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI (``http://127.0.0.1:<port>``) of an ``mlflow server`` on a fresh sqlite store."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # The server's background job runner (huey consumers) is not needed and slows start and stop.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "mlartifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    log_path = root / "server.log"
    with open(log_path, "wb") as log_file:
        # Own process group, so teardown stops the server and its workers and nothing else.
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        stop_group(process)


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished two-stage sweep (``TINY_SPEC``, study ``tiny``) on a real local Ray runtime, with
    its Optuna SQLite study and MLflow SQLite store; about a minute. Keys: ``root``, ``spec``,
    ``dir`` (the sweep folder), ``uri`` (the MLflow tracking URI). Tests may add studies
    beside it but must not change study ``tiny``."""
    from sweep.run import main

    root = tmp_path_factory.mktemp("sweep")
    spec = root / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        assert main([str(spec)]) == 0
    finally:
        mp.undo()
    out = root / "out"
    return {"root": root, "spec": spec, "dir": out / "tiny", "uri": f"sqlite:///{(out / 'mlflow.db').resolve()}"}
