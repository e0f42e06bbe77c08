"""MLflow tracking of a sweep: ``store`` (URIs, the client, tag names, experiments and parent
runs, the one error formatter) and ``trial_run`` (the trial process's ``TrialTracker``)."""

from __future__ import annotations

from sweep.tracking.store import (
    CHECKPOINT_DIR,
    CONFIG_ARTIFACT,
    SPEC_ARTIFACT,
    TAG_ARCHITECTURE,
    TAG_ENCODER,
    TAG_KIND,
    TAG_METRIC,
    TAG_MODE,
    TAG_OPTUNA_TRIAL,
    TAG_PARAMETER_COUNT,
    TAG_PARENT,
    TAG_RAY_NODE,
    TAG_RAY_TRIAL,
    TAG_STAGE,
    TAG_STAGE1_RUN,
    TAG_STAGE_PARENT,
    TAG_STUDY,
    TAG_TRIAL_KEY,
    TAG_TRIAL_STATE,
    TRIAL_STATES,
    USER_ATTR_MLFLOW,
    USER_ATTR_RAY,
    TrackingError,
    default_artifact_root,
    default_tracking_uri,
    ensure_experiment,
    find_trial_run,
    finish_parent,
    finish_trial_run,
    first_line,
    start_parent_run,
)
from sweep.tracking.trial_run import TrialTracker

__all__ = [
    "CHECKPOINT_DIR", "CONFIG_ARTIFACT", "SPEC_ARTIFACT", "TAG_ARCHITECTURE", "TAG_ENCODER",
    "TAG_KIND", "TAG_METRIC", "TAG_MODE", "TAG_OPTUNA_TRIAL", "TAG_PARAMETER_COUNT", "TAG_PARENT", "TAG_RAY_NODE", "TAG_RAY_TRIAL", "TAG_STAGE", "TAG_STAGE1_RUN",
    "TAG_STAGE_PARENT", "TAG_STUDY", "TAG_TRIAL_KEY", "TAG_TRIAL_STATE", "TRIAL_STATES", "USER_ATTR_MLFLOW", "USER_ATTR_RAY", "TrackingError",
    "TrialTracker", "default_artifact_root", "default_tracking_uri", "ensure_experiment", "find_trial_run",
    "finish_parent", "finish_trial_run", "first_line", "start_parent_run",
]
