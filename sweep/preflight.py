"""Sweep-level checks before Ray starts and before anything is written: each one line, exit 2.

``depthcore.preflight`` checks what one trial reads (data files, device, output folder); this
module checks what the whole sweep needs from the machine and the services around it:

- the resources of one trial fit the machine a local runtime would start on (a trial asking
  for more CPUs or GPUs than exist would stay PENDING forever);
- a Ray address answers on its port within seconds (Ray itself retries for minutes);
- an MLflow tracking server answers (MLflow retries a dead server for minutes too), and a sweep
  on a cluster has one;
- on a live cluster, where nodes may still join, some node can run one trial: a bounded wait
  (``--resource-wait``) instead of a refusal, then one line naming what the nodes have.

No Ray here: the checks use the standard library, torch's device count and MLflow's client
(``sweep.tuner.cluster_nodes`` reads the cluster's nodes for the wait).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from depthcore.errors import UserError
from sweep.redact import redact, redact_text
from sweep.spec import SweepSpec
from sweep.tracking import TrackingError
from sweep.tracking.store import client_for

CONNECT_TIMEOUT_S = 5.0
"""How long a Ray address may take to accept a TCP connection."""

RESOURCE_WAIT_S = 120.0
"""How long a sweep on a cluster waits for a node that can run one trial (an autoscaler adds one in minutes)."""


class PreflightError(UserError):
    """The machine or a service cannot give the sweep what it needs (one line, naming the key)."""


def local_resources() -> dict[str, float]:
    """What a local Ray runtime of the sweep gets: every CPU (``sweep.tuner.ray_runtime``) and every CUDA device."""
    import torch

    return {"cpu": float(os.cpu_count() or 1), "gpu": float(torch.cuda.device_count() if torch.cuda.is_available() else 0)}


def check_local_resources(spec: SweepSpec, available: dict[str, float] | None = None) -> None:
    """One trial's ``resources`` fit a local runtime; else Ray would wait forever for a node that never joins."""
    have = local_resources() if available is None else available
    for key, want in (("cpu", spec.resources.cpu), ("gpu", spec.resources.gpu)):
        if want > have[key]:
            unit = "CPUs" if key == "cpu" else "GPUs"
            raise PreflightError(
                f"{spec.path}: resources.{key}: expected at most the {have[key]:g} {unit} of this machine "
                f"(a local run), found {want:g}; lower it, or pass --address of a cluster that has them")


def ray_endpoint(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a Ray address to probe, or None for one Ray resolves itself (``auto``, ``local``)."""
    if address in ("auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise PreflightError(f"--address: expected HOST:PORT, ray://HOST:PORT or auto, found {address!r}")
    return parts.hostname, port


def check_ray_address(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A Ray address accepts a connection within ``timeout_s``; ``None`` (a local runtime) passes."""
    endpoint = ray_endpoint(address) if address else None
    if endpoint is None:
        return
    try:
        with socket.create_connection(endpoint, timeout=timeout_s):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise PreflightError(f"--address {address}: expected a Ray cluster listening there, found no answer "
                             f"within {timeout_s:g} s ({reason}); start one with `ray start --head` or omit "
                             f"--address for a local run") from None


def check_tracking(tracking_uri: str) -> None:
    """The MLflow store answers (a server within seconds; a SQLite file's folder exists); the
    message shows the URI without its password."""
    try:
        client_for(tracking_uri)
    except TrackingError as err:
        raise PreflightError(f"{redact_text(str(err), tracking_uri)}; start the server or unset "
                             f"MLFLOW_TRACKING_URI for a local store") from None


def check_cluster_tracking(address: str | None, tracking_uri: str | None) -> None:
    """A sweep on a Ray cluster records to an MLflow server: trials on other nodes cannot write
    the driver's SQLite file, and would not fall back to it silently."""
    if address and not (tracking_uri or "").startswith(("http://", "https://")):
        shown = redact(tracking_uri) if tracking_uri else "(unset: a local file)"
        raise PreflightError(f"--address {address}: a sweep on a Ray cluster needs an MLflow tracking server, "
                             f"found MLFLOW_TRACKING_URI={shown}; set MLFLOW_TRACKING_URI=http://HOST:PORT "
                             f"(README: Run on a cluster)")


def check_sweep(spec: SweepSpec, address: str | None, tracking_uri: str | None) -> None:
    """Everything above, in the order of cost; ``tracking_uri`` None: a local store made on the way."""
    if not address:
        check_local_resources(spec)
    check_ray_address(address)
    check_cluster_tracking(address, tracking_uri)
    if tracking_uri:
        check_tracking(tracking_uri)


def wait_for_cluster_resources(spec: SweepSpec, address: str, nodes: Callable[[], list[dict[str, float | str]]],
                               wait_s: float = RESOURCE_WAIT_S, poll_s: float = 2.0) -> None:
    """Wait at most ``wait_s`` until an alive node holds one trial's ``resources`` (a trial runs on
    one node); ``nodes()`` lists the alive nodes as ``{"ip", "cpu", "gpu"}``. Else Ray would keep
    the trials PENDING with no end."""
    want = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    needs = f"{want['cpu']:g} CPU and {want['gpu']:g} GPU"
    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        have = nodes()
        if any(all(float(node[key]) >= value for key, value in want.items()) for node in have):
            if waited:
                print("a node that can run a trial is there; starting", flush=True)
            return
        shown = "; ".join(f"{n['ip']}: {float(n['cpu']):g} CPU, {float(n['gpu']):g} GPU" for n in have) or "none alive"
        if time.monotonic() >= deadline:
            raise PreflightError(
                f"{spec.path}: resources: expected a node with {needs} (one trial) in the Ray cluster at {address}, "
                f"found none after waiting {wait_s:g} s (nodes: {shown}); add such a node, lower resources, "
                f"or wait longer with --resource-wait SECONDS")
        if not waited:
            print(f"waiting up to {wait_s:g} s for a node with {needs} (one trial) to join the cluster "
                  f"(nodes now: {shown})", flush=True)
            waited = True
        time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))
