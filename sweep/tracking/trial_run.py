"""The trial side of MLflow tracking: ``TrialTracker`` logs one trial as a child run.

Built in the trial process from plain strings (it pickles without its client). After a
successful ``start`` no MLflow error stops training: tracking is a record of the training.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from depthcore.config import ExperimentConfig, flatten
from sweep.tracking.store import (
    CHECKPOINT_DIR,
    CONFIG_ARTIFACT,
    TAG_KIND,
    TAG_PARENT,
    TAG_TRIAL_KEY,
    TrackingError,
    check_state,
    client_for,
    close_run,
    find_child,
    first_line,
    is_number,
    log_batch,
    log_yaml,
    metric_list,
    param_value,
    server_unreachable,
)
from sweep.tracking.views import PREVIEW_FILE, PREVIEW_KEY, best_epoch_metrics

log = logging.getLogger(__name__)


class TrialTracker:
    """Logs one trial as a child run; built in the trial process from plain strings.

    No MLflow error after ``start`` stops training: a failed call logs one warning (per tracker)
    and is counted in ``failures``; a server that stops answering takes the tracker offline.
    ``start`` itself raises ``TrackingError`` for an unreachable or wrong tracking URI.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, trial_key: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.trial_key = trial_key
        self.run_id: str | None = None
        self.resumed = False
        """True when ``start`` reopened the run of an earlier attempt of this trial."""
        self.failures = 0
        """MLflow calls that failed, or were skipped once the tracker went offline."""
        self.offline = False
        """Set when the server stops answering: the rest of the trial trains without MLflow
        (``sweep.relog`` logs it from Ray's records later) instead of waiting on it at every call."""
        self._client: MlflowClient | None = None
        self._warned = False

    def __getstate__(self) -> dict[str, Any]:
        # The client holds connections; a copy in another process makes its own.
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = client_for(self.tracking_uri)
        return self._client

    def start(self, params: Mapping[str, Any], tags: Mapping[str, Any], run_name: str | None = None) -> str:
        """Create the child run, or reuse the one an earlier attempt of this trial made; returns its id.

        ``params``: the trial config, flat (``{"optim/lr": ...}``) or nested. ``tags``: e.g.
        ``trial_tags(cfg)``. A reused run keeps the params it has (MLflow params cannot
        change) and gets the missing ones.
        """
        client = self.client
        flat = {k: param_value(v) for k, v in flatten(dict(params)).items()}
        all_tags = {
            TAG_KIND: "trial",
            TAG_TRIAL_KEY: self.trial_key,
            TAG_PARENT: self.parent_run_id,
            **{k: param_value(v) for k, v in tags.items()},
        }
        try:
            existing = find_child(client, self.parent_run_id, self.trial_key)
            if existing is None:
                run = client.create_run(self.experiment_id, run_name=run_name or self.trial_key, tags=all_tags)
                self.run_id = run.info.run_id
                self.resumed = False
                log_batch(client, self.run_id, params=flat)
                return self.run_id
            self.run_id = existing.info.run_id
            self.resumed = True
            client.update_run(self.run_id, status="RUNNING")
            logged = existing.data.params
            changed = sorted(k for k, v in flat.items() if k in logged and logged[k] != v)
            if changed:
                log.warning("trial %s: run %s keeps its logged params; changed now: %s",
                            self.trial_key, self.run_id, ", ".join(changed))
            log_batch(client, self.run_id, params={k: v for k, v in flat.items() if k not in logged}, tags=all_tags)
            return self.run_id
        except Exception as err:
            raise TrackingError(
                f"MLflow tracking URI {self.tracking_uri}: cannot start the run of trial {self.trial_key!r} "
                f"under parent {self.parent_run_id}: {first_line(err)}"
            ) from None

    def log_epoch(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log one epoch's numeric metrics at ``step`` (the epoch number); other values are skipped."""
        numeric = {k: v for k, v in metrics.items() if is_number(v)}
        self._safe("log_epoch", lambda: log_batch(self.client, self._run(), metrics=metric_list(numeric, step)))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Add or overwrite tags (e.g. ``parameter_count`` once the model is built)."""
        self._safe("set_tags", lambda: log_batch(
            self.client, self._run(), tags={k: param_value(v) for k, v in tags.items()}))

    def log_config(self, config: ExperimentConfig | Mapping[str, Any]) -> None:
        """The trial's full config as ``config.yaml``."""
        raw = config.to_dict() if isinstance(config, ExperimentConfig) else dict(config)
        self._safe("log_config", lambda: log_yaml(self.client, self._run(), raw, CONFIG_ARTIFACT))

    def log_best_checkpoint(self, directory: str | Path) -> None:
        """The files of the best epoch's checkpoint folder (``checkpoint.pt``) under ``checkpoint/``."""
        path = Path(directory)

        def upload() -> None:
            if path.is_file():
                self.client.log_artifact(self._run(), str(path), CHECKPOINT_DIR)
            elif path.is_dir() and any(path.iterdir()):
                self.client.log_artifacts(self._run(), str(path), CHECKPOINT_DIR)
            else:
                raise FileNotFoundError(f"{path}: no checkpoint to log")

        self._safe("log_best_checkpoint", upload)

    def log_best(self, metrics: Mapping[str, Any], epoch: int) -> None:
        """The ``val/*`` metrics of a new best epoch as ``best/*`` summary metrics (``best/val_rmse``,
        ``best/epoch``): the runs table then shows what selection ranks by."""
        self._safe("log_best", lambda: log_batch(
            self.client, self._run(), metrics=metric_list(best_epoch_metrics(metrics, epoch), step=epoch)))

    def log_preview(self, png_path: str | Path, epoch: int) -> None:
        """A prediction picture (``depthcore.viz``) of epoch ``epoch``: as an image of key
        ``preview_val`` at that step, and as ``preview_val_best.png`` at the artifact root
        (one name in every run, so the compare view shows them side by side)."""

        def upload() -> None:
            from PIL import Image

            with Image.open(png_path) as image:
                self.client.log_image(self._run(), image.convert("RGB"), key=PREVIEW_KEY, step=int(epoch))
            with tempfile.TemporaryDirectory() as tmp:
                named = Path(tmp) / PREVIEW_FILE
                shutil.copyfile(png_path, named)
                self.client.log_artifact(self._run(), str(named))

        self._safe("log_preview", upload)

    def finish(self, state: str) -> None:
        """End the run: ``completed``, ``stopped_early`` (both FINISHED) or ``failed`` (FAILED)."""
        check_state(state)
        self._safe("finish", lambda: close_run(self.client, self._run(), state))

    # -- internals --

    def _run(self) -> str:
        if self.run_id is None:
            raise RuntimeError(f"trial {self.trial_key!r}: call TrialTracker.start before logging")
        return self.run_id

    def go_offline(self, reason: str) -> None:
        """Stop calling MLflow for this trial (one warning line naming why)."""
        if not self.offline:
            self.offline = True
            log.warning("trial %s: MLflow is not answering (%s); training goes on without it, and the "
                        "stage's end or --resume logs the trial from Ray's records", self.trial_key, reason)

    def _safe(self, what: str, action: Any) -> None:
        if self.offline:
            self.failures += 1
            return
        if self.run_id is None:
            raise RuntimeError(f"trial {self.trial_key!r}: call TrialTracker.start before {what}")
        try:
            action()
        except Exception as err:
            # Tracking is a record of the training, not a reason to stop it.
            self.failures += 1
            if server_unreachable(err):
                self.go_offline(f"{what}: {first_line(err)}")
            elif not self._warned:
                self._warned = True
                log.warning("trial %s: MLflow %s failed (%s); training goes on, further tracking errors "
                            "are counted but not shown", self.trial_key, what, first_line(err))
