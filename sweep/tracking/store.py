"""MLflow tracking of a sweep (driver side and shared helpers): one experiment per study, one parent run per stage, one child run per trial.

The driver calls ``ensure_experiment``, ``start_parent_run`` and ``finish_parent``; each Ray
trial builds a ``TrialTracker`` from plain strings and logs its own child run. Everything
goes through ``MlflowClient`` with explicit run ids, never the fluent ``mlflow.start_run``
API, because Ray may run several trials one after another in one worker process and a
process-global "active run" would leak between them.

Run layout (names are constants below, so queries need not repeat string literals)::

    experiment <study>                       artifacts under <root>/mlartifacts/<study>/
      parent run  <stage> stage · <study>    depthsweep.kind=parent, .stage, .study, .metric, .mode;
                                             spec.yaml
        child run <arch>-<stage>-<trial#>    mlflow.parentRunId, depthsweep.kind=trial,
                                             depthsweep.trial_key, depthsweep.trial_state,
                                             architecture, stage, encoder, parameter_count,
                                             stage1_run_id (stage diw); params = flat config;
                                             metrics per epoch (step = epoch), best/* at the best epoch;
                                             config.yaml, checkpoint/checkpoint.pt, preview_val_best.png,
                                             images of key preview_val (sweep.tracking.views)

Trial states: ``completed`` and ``stopped_early`` end as MLflow status FINISHED (an ASHA stop
is a normal outcome whose metrics are valid; KILLED would read as an interruption in the UI),
``failed`` as FAILED; the ``depthsweep.trial_state`` tag tells the first two apart.
"""

from __future__ import annotations

import numbers
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

from depthcore.config import flatten
from sweep.tracking.views import NOTE_TAG, experiment_note, parent_run_name

TAG_PARENT = "mlflow.parentRunId"
TAG_KIND = "depthsweep.kind"  # "parent" or "trial"
TAG_STAGE_PARENT = "depthsweep.stage"
TAG_STUDY = "depthsweep.study"
TAG_METRIC = "depthsweep.metric"  # on a parent run: the stage's selection metric, e.g. val/rmse
TAG_MODE = "depthsweep.mode"  # on a parent run: min or max
TAG_TRIAL_KEY = "depthsweep.trial_key"
TAG_TRIAL_STATE = "depthsweep.trial_state"
# Tags for people: short names that read well in the UI's run table and compare page.
TAG_ARCHITECTURE = "architecture"
TAG_STAGE = "stage"
TAG_ENCODER = "encoder"
TAG_PARAMETER_COUNT = "parameter_count"
TAG_STAGE1_RUN = "stage1_run_id"

# Links between the three records of one trial, by id: the Optuna trial carries the Ray trial id
# and the MLflow run id as user attributes; the MLflow run carries both ids as tags.
USER_ATTR_RAY = "ray_trial_id"
USER_ATTR_MLFLOW = "mlflow_run_id"
TAG_RAY_TRIAL = "ray_trial_id"
TAG_OPTUNA_TRIAL = "optuna_trial_number"
TAG_RAY_NODE = "ray_node_ip"  # the address of the Ray node the trial ran on (which machine of a cluster)

TRIAL_STATES = {"completed": "FINISHED", "stopped_early": "FINISHED", "failed": "FAILED"}
"""``finish(state)`` -> MLflow run status."""

SPEC_ARTIFACT = "spec.yaml"
CONFIG_ARTIFACT = "config.yaml"
CHECKPOINT_DIR = "checkpoint"


class TrackingError(RuntimeError):
    """MLflow could not be reached or used; the message names the tracking URI."""


# -- where runs are stored -------------------------------------------------------------------


def default_tracking_uri(root: str | Path) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<root>/mlflow.db`` (absolute; creates ``root``).

    Browse the default store with ``mlflow ui --backend-store-uri sqlite:///<root>/mlflow.db``;
    its artifacts live beside it in ``default_artifact_root(root)``.
    """
    from_env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if from_env:
        return from_env
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


DEFAULT_STORE = Path("runs") / "sweeps" / "mlflow.db"
"""The sweeps' MLflow store (``study.output_dir`` of the shipped search spaces), used for
MLflow URIs when neither ``--tracking-uri`` nor ``MLFLOW_TRACKING_URI`` is given."""


def existing_tracking_uri() -> str | None:
    """For reading: ``$MLFLOW_TRACKING_URI``, else ``DEFAULT_STORE`` if it exists, else None (no
    store is created: MLflow would otherwise make an empty one)."""
    from_env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if from_env:
        return from_env
    return f"sqlite:///{DEFAULT_STORE.resolve()}" if DEFAULT_STORE.is_file() else None


def default_artifact_root(root: str | Path) -> Path:
    """``<root>/mlartifacts``: where ``ensure_experiment`` puts artifacts of a local store."""
    return Path(root).resolve() / "mlartifacts"


def _is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def client_for(tracking_uri: str) -> MlflowClient:
    """A client for ``tracking_uri``; a server that does not answer, a missing sqlite folder or
    an unknown scheme raises a one-line ``TrackingError`` naming the URI."""
    if _is_server(tracking_uri):
        # MLflow retries a dead server for minutes; one short probe gives a clear error at once.
        url = tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()
        except (urllib.error.URLError, OSError) as err:
            raise TrackingError(f"MLflow tracking server {tracking_uri}: no answer at {url} ({first_line(err)})") from None
    elif tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///"):])
        if not path.parent.is_dir():
            raise TrackingError(f"MLflow tracking URI {tracking_uri}: folder {path.parent} does not exist")
    try:
        return MlflowClient(tracking_uri=tracking_uri)
    except Exception as err:  # MLflow raises several types for a bad URI
        raise TrackingError(f"MLflow tracking URI {tracking_uri}: {first_line(err)}") from None


def first_line(err: BaseException) -> str:
    """A library's error on one line with its type (``OperationalError: unable to open ...``): the
    sweep's formatter for errors it did not raise itself (``depthcore.errors.one_line`` reads the text)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0].strip()}" if text else type(err).__name__


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"


# -- driver side: experiment and parent runs -----------------------------------------------------


def ensure_experiment(name: str, tracking_uri: str, artifact_root: str | Path | None = None) -> str:
    """The id of experiment ``name``, created if missing (one experiment per study).

    ``artifact_root`` applies to a local store (sqlite or file): a new experiment keeps its
    artifacts in ``<artifact_root>/<name>``. A tracking server decides that itself (its
    ``--artifacts-destination``), so there the argument is ignored.
    """
    client = client_for(tracking_uri)
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            location = None
            if artifact_root is not None and not _is_server(tracking_uri):
                location = (Path(artifact_root).resolve() / _safe_name(name)).as_uri()
            try:
                return client.create_experiment(name, artifact_location=location)
            except Exception:
                # Another driver may have created it between the lookup and here.
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
    except Exception as err:
        raise TrackingError(f"MLflow tracking URI {tracking_uri}: experiment {name!r}: {first_line(err)}") from None
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow tracking URI {tracking_uri}: experiment {name!r} (id {experiment.experiment_id}) is deleted; "
            f"restore it (mlflow experiments restore --experiment-id {experiment.experiment_id}) or use another study name"
        )
    return experiment.experiment_id


def start_parent_run(
    experiment_id: str,
    stage: str,
    study_name: str,
    spec_dict: Mapping[str, Any],
    tracking_uri: str,
    resume: bool,
) -> str:
    """Start (or, with ``resume``, reuse) the parent run of one sweep stage; returns its run id.

    The resolved spec is logged as ``spec.yaml``. On resume the newest parent run with the
    same study and stage is reopened, so a resumed sweep adds trials under the same parent.
    """
    client = client_for(tracking_uri)
    if resume:
        found = client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`{TAG_KIND}` = 'parent' and tags.`{TAG_STAGE_PARENT}` = {_literal(stage)} "
                f"and tags.`{TAG_STUDY}` = {_literal(study_name)}"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            log_yaml(client, run_id, dict(spec_dict), SPEC_ARTIFACT)
            return run_id
    stage_spec = dict(spec_dict.get("stages", {}).get(stage, {}))
    selection = {TAG_METRIC: stage_spec["metric"], TAG_MODE: stage_spec["mode"]} if "metric" in stage_spec else {}
    describe_experiment(client, experiment_id, study_name, spec_dict)
    run = client.create_run(
        experiment_id,
        run_name=parent_run_name(study_name, stage),
        tags={TAG_KIND: "parent", TAG_STAGE_PARENT: stage, TAG_STUDY: study_name, **selection},
    )
    log_yaml(client, run.info.run_id, dict(spec_dict), SPEC_ARTIFACT)
    return run.info.run_id


def describe_experiment(client: MlflowClient, experiment_id: str, study_name: str, spec_dict: Mapping[str, Any]) -> None:
    """Set the experiment's description (the UI's note): how to compare the architectures, by
    which summary metric each stage of ``spec_dict`` selects."""
    selections = {stage: (own["metric"], own.get("mode", "min"))
                  for stage, own in (spec_dict.get("stages") or {}).items() if isinstance(own, Mapping) and "metric" in own}
    client.set_experiment_tag(experiment_id, NOTE_TAG, experiment_note(study_name, selections))


def finish_parent(run_id: str, summary: Mapping[str, Any], tracking_uri: str, status: str = "FINISHED") -> None:
    """Close a parent run: numbers in ``summary`` become metrics, other values tags; all go to ``summary.yaml``.

    ``status`` is an MLflow run status (``FINISHED``, ``FAILED``, ``KILLED``).
    """
    if status not in ("FINISHED", "FAILED", "KILLED"):
        raise ValueError(f"finish_parent: status must be FINISHED, FAILED or KILLED, found {status!r}")
    client = client_for(tracking_uri)
    flat = flatten(dict(summary))
    metrics = {k: v for k, v in flat.items() if is_number(v)}
    tags = {k: param_value(v) for k, v in flat.items() if k not in metrics}
    log_batch(client, run_id, metrics=metric_list(metrics, step=0), tags=tags)
    log_yaml(client, run_id, flat, "summary.yaml")
    client.set_terminated(run_id, status=status)


def find_trial_run(tracking_uri: str, parent_run_id: str, trial_key: str) -> str | None:
    """Run id of the child run of ``trial_key`` under ``parent_run_id``, or None."""
    client = client_for(tracking_uri)
    run = find_child(client, parent_run_id, trial_key)
    return run.info.run_id if run is not None else None


def finish_trial_run(tracking_uri: str, parent_run_id: str, trial_key: str, state: str) -> str | None:
    """Close a trial's child run from the driver; returns its run id, or None if it has none.

    For trials whose process cannot do it: Ray ends a trial that the scheduler stops early (or
    whose worker dies) without running the rest of its function, so a Tune callback on the
    driver (``on_trial_complete`` / ``on_trial_error``) closes the run instead.
    """
    check_state(state)
    client = client_for(tracking_uri)
    run = find_child(client, parent_run_id, trial_key)
    if run is None:
        return None
    close_run(client, run.info.run_id, state)
    return run.info.run_id


HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
"""MLflow's HTTP retries for the sweep's processes, unless the environment sets them: a server
that is down costs a call about 7 s (waits of 1, 2 and 4 s), not MLflow's default of minutes
(7 retries, factor 2), so training goes on while it is away and the driver reports it soon."""


def bound_http_retries() -> None:
    for name, value in HTTP_RETRIES.items():
        os.environ.setdefault(name, value)


def server_unreachable(err: BaseException) -> bool:
    """``err`` (an MLflow exception, or what it chains to) says the server did not answer."""
    import requests

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                             requests.exceptions.RetryError, ConnectionError, TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# -- small helpers --------------------------------------------------------------------------------


def check_state(state: str) -> None:
    if state not in TRIAL_STATES:
        raise ValueError(f"trial state must be one of {', '.join(TRIAL_STATES)}, found {state!r}")


def close_run(client: MlflowClient, run_id: str, state: str) -> None:
    client.set_tag(run_id, TAG_TRIAL_STATE, state)
    client.set_terminated(run_id, status=TRIAL_STATES[state])


def find_child(client: MlflowClient, parent_run_id: str, trial_key: str) -> Any:
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{TAG_PARENT}` = {_literal(parent_run_id)} and tags.`{TAG_TRIAL_KEY}` = {_literal(trial_key)}",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0] if runs else None


def _literal(value: str) -> str:
    """A string literal for MLflow's search filter (which has no escapes: pick the other quote)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"MLflow search: a value may not contain both quote characters, found {value!r}")


def is_number(value: Any) -> bool:
    # numbers.Real covers Python and NumPy floats and ints; a bool is a flag, not a metric.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def param_value(value: Any) -> str:
    text = str(value)
    # MLflow refuses longer values; the full config is in config.yaml anyway.
    return text if len(text) <= MAX_PARAM_VAL_LENGTH else text[: MAX_PARAM_VAL_LENGTH - 3] + "..."


def metric_list(metrics: Mapping[str, Any], step: int) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(key, float(value), now, int(step)) for key, value in metrics.items()]


def log_batch(
    client: MlflowClient,
    run_id: str,
    *,
    metrics: list[Metric] | None = None,
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """``log_batch`` in chunks within MLflow's per-request limits."""
    metrics = metrics or []
    param_list = [Param(k, v) for k, v in (params or {}).items()]
    tag_list = [RunTag(k, v) for k, v in (tags or {}).items()]
    for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
    for i in range(0, len(param_list), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=param_list[i : i + MAX_PARAMS_TAGS_PER_BATCH])
    for i in range(0, len(tag_list), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=tag_list[i : i + MAX_PARAMS_TAGS_PER_BATCH])


def log_yaml(client: MlflowClient, run_id: str, data: Mapping[str, Any], name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(yaml.safe_dump(_plain(data), sort_keys=False))
        client.log_artifact(run_id, str(path))


def _plain(value: Any) -> Any:
    """Tuples, paths and other objects -> YAML-safe lists and strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
