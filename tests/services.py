"""Real services for the cluster tests: PostgreSQL, an MLflow tracking server on it, a two-node Ray cluster.

Each is a context manager that starts the real program in its own temporary folder and process
group, waits until it answers, and stops it (and removes the folder) on exit, whatever happened.
Nothing here is a stand-in: the tests drive ``initdb``/``pg_ctl``, ``mlflow server`` and
``ray start`` exactly as the README tells a user to. A missing tool skips the test with an
install hint, or fails it under ``DEPTHSWEEP_REQUIRE_ALL=1`` (``tests/_require.py``).

PostgreSQL refuses to run as root: as root, the server runs as the ``postgres`` system user (the
Debian package creates it) in a folder that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from _require import REQUIRE_ALL, require_tool

POSTGRES_HINT = "apt-get install postgresql"
START_TIMEOUT_S = 180  # the MLflow server's first start migrates its database: ~1 min on 2 busy cores


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_group(process: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM the process group ``process`` leads (started with ``start_new_session``), SIGKILL if it lingers."""
    for sig, grace in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; its children (a server's workers) may still hold the group.
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(1)


def wait_until(ready, what: str, process: subprocess.Popen, log: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll ``ready()`` until it is true; fail naming ``what`` with the log's tail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{_tail(log)}", pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not ready after {timeout_s:.0f} s:\n{_tail(log)}", pytrace=False)
        time.sleep(0.5)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.is_file() else "(no log)"


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# -- PostgreSQL ---------------------------------------------------------------------------------


def _pg_tool(name: str) -> str:
    """A PostgreSQL server program: on PATH, else Debian's ``/usr/lib/postgresql/<version>/bin``."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    return found or require_tool(name, POSTGRES_HINT)


def require_postgres() -> None:
    """Skip (or fail under ``DEPTHSWEEP_REQUIRE_ALL=1``) unless PostgreSQL's server programs are here."""
    _pg_tool("initdb")
    _pg_tool("pg_ctl")


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    """Handed to clients only through ``env`` (``PGPASSWORD``) or ``passfile``, never in a URL."""
    passfile: Path
    """A PostgreSQL password file (``PGPASSFILE``) holding this server's password."""
    control: list[str]
    """``pg_ctl -D DATA ...``: append ``stop`` or ``start`` (run as the server's user, ``as_user``)."""
    as_user: dict

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URL without the password (libpq reads it from the environment)."""
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    @property
    def env(self) -> dict[str, str]:
        return {"PGPASSWORD": self.password}

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``: as a crash or a lost database host would)."""
        subprocess.run([*self.control, "-m", "immediate", "-w", "stop"], check=True, capture_output=True,
                       **self.as_user)

    def start(self) -> None:
        """Start it again on the same port and data."""
        subprocess.run([*self.control, "-w", "-t", "120", "start"], check=True, capture_output=True, **self.as_user)


def _as_server_user() -> tuple[dict, str | None]:
    """``Popen`` keywords that run a program as the ``postgres`` user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return {}, None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        message = f"running as root needs the 'postgres' system user; install PostgreSQL with: {POSTGRES_HINT}"
        if os.environ.get(REQUIRE_ALL) == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}, user.pw_name


@contextmanager
def postgres(databases: tuple[str, ...] = ("optuna", "mlflow")) -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1 with a password-protected role and ``databases``."""
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    as_user, owner = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="depthsweep-pg-"))
    data, sock, log = root / "data", root / "sock", root / "server.log"
    sock.mkdir()
    user, password, port = "depthsweep", secrets.token_urlsafe(18), free_port()
    (root / "pwfile").write_text(password + "\n")
    if owner is not None:
        for path in (root, sock, root / "pwfile"):
            shutil.chown(path, owner, owner)
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    try:
        subprocess.run([initdb, "-D", str(data), "-U", user, "--pwfile", str(root / "pwfile"),
                        "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync"],
                       check=True, capture_output=True, env=env, cwd=root, **as_user)
        (root / "pwfile").unlink()
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off"
        control = [pg_ctl, "-D", str(data), "-l", str(log), "-o", options]
        started = subprocess.run([*control, "-w", "-t", "120", "start"],
                                 capture_output=True, text=True, env=env, cwd=root, **as_user)
        if started.returncode != 0:
            pytest.fail(f"pg_ctl start failed: {started.stderr.strip()}\n{_tail(log)}", pytrace=False)
        passfile = Path(tempfile.mkdtemp(prefix="depthsweep-pgpass-")) / "pgpass"
        passfile.write_text(f"127.0.0.1:{port}:*:{user}:{password}\n")
        passfile.chmod(0o600)  # libpq ignores a password file others can read
        server = Postgres("127.0.0.1", port, user, password, passfile, control, {**as_user, "env": env, "cwd": root})
        import psycopg

        with psycopg.connect(host=server.host, port=port, user=user, password=password, dbname="postgres",
                             autocommit=True) as conn:
            for name in databases:
                conn.execute(f'CREATE DATABASE "{name}"')
        yield server
    except subprocess.CalledProcessError as err:
        pytest.fail(f"{err.cmd[0]} failed: {err.stderr.decode(errors='replace').strip()}", pytrace=False)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True,
                           cwd=root, **as_user)
        shutil.rmtree(root, ignore_errors=True)
        if "passfile" in locals():
            shutil.rmtree(passfile.parent, ignore_errors=True)


# -- MLflow tracking server -----------------------------------------------------------------------


@contextmanager
def mlflow_server(backend_store_uri: str, env: Mapping[str, str], port: int | None = None,
                  root: Path | None = None) -> Iterator[str]:
    """``mlflow server --serve-artifacts`` on ``backend_store_uri`` (credentials in ``env``); yields its URI.

    ``port`` and ``root`` (its artifacts and log, kept when given) let a test start the same
    server again after stopping it."""
    keep = root is not None
    root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="depthsweep-mlflow-"))
    root.mkdir(parents=True, exist_ok=True)
    port, log = port or free_port(), root / "server.log"
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    server_env.update(env)
    server_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job runner needed
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
               "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=root, env=server_env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{uri}/health"), "mlflow server", process, log)
        yield uri
    finally:
        stop_group(process)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


# -- a Ray cluster of two nodes ------------------------------------------------------------------------


@dataclass(frozen=True)
class RayCluster:
    address: str
    """``host:port`` of the head's GCS, for ``--address`` / ``RAY_ADDRESS``."""
    node_ips: tuple[str, ...]
    env: dict[str, str]
    """What a driver needs besides the address: token authentication on, and the token."""
    sessions: tuple[int, ...]
    """Each node's process session (its ``ray start``, raylet and workers): ``os.killpg`` loses a node."""


@contextmanager
def ray_cluster(node_ips: tuple[str, ...] = ("127.0.0.1", "127.0.0.2"), cpus_per_node: int = 1) -> Iterator[RayCluster]:
    """A Ray head on ``node_ips[0]`` and one more node per further address (loopback addresses are
    distinct nodes to Ray), each with ``cpus_per_node`` CPUs, token authentication on."""
    ray = str(Path(sys.executable).with_name("ray"))
    if not os.access(ray, os.X_OK):
        ray = require_tool("ray", "pip install 'ray[tune]' (a project dependency)")
    root = Path(tempfile.mkdtemp(prefix="depthsweep-ray-"))
    port = free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**os.environ, **auth, "RAY_USAGE_STATS_ENABLED": "0"}
    address = f"{node_ips[0]}:{port}"
    processes: list[subprocess.Popen] = []
    try:
        for i, ip in enumerate(node_ips):
            log = root / f"node{i}.log"
            where = ["--head", f"--port={port}", "--include-dashboard=false"] if i == 0 else [f"--address={address}"]
            command = [ray, "start", "--block", *where, f"--node-ip-address={ip}", f"--num-cpus={cpus_per_node}",
                       "--num-gpus=0", f"--temp-dir={root / f'tmp{i}'}", "--disable-usage-stats"]
            with open(log, "wb") as out:
                processes.append(subprocess.Popen(command, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                                  start_new_session=True))
            wait_until(lambda n=i + 1: _alive_nodes(address, env) >= n, f"ray node {ip}", processes[-1], log)
        yield RayCluster(address, tuple(node_ips), auth, tuple(p.pid for p in processes))
    finally:
        for process in reversed(processes):
            stop_group(process, grace_s=15)
        shutil.rmtree(root, ignore_errors=True)


def _alive_nodes(address: str, env: Mapping[str, str]) -> int:
    """How many nodes the cluster at ``address`` counts alive (0 while its GCS does not answer)."""
    probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
             "print(sum(1 for n in ray.nodes() if n['Alive']))")
    done = subprocess.run([sys.executable, "-c", probe, address], env=dict(env), capture_output=True, text=True,
                          timeout=120)
    lines = done.stdout.strip().splitlines()
    return int(lines[-1]) if done.returncode == 0 and lines and lines[-1].isdigit() else 0
