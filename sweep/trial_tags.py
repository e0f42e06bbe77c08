"""Tags that describe a trial in MLflow: architecture, stage, encoder, parameter count, lineage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from depthcore.config import ExperimentConfig
from depthcore.models import describe_model as depthcore_describe
from sweep.tracking import TAG_ARCHITECTURE, TAG_ENCODER, TAG_PARAMETER_COUNT, TAG_STAGE, TAG_STAGE1_RUN


def trial_tags(
    config: ExperimentConfig,
    *,
    parameter_count: int | None = None,
    stage1_run_id: str | None = None,
) -> dict[str, str]:
    """``architecture``, ``stage``, ``encoder``, ``parameter_count`` (and ``stage1_run_id``) of a trial.

    Stage ``diw`` trains the stage-1 checkpoint's model, named by
    ``train.init_checkpoint``; the trial config records that model in ``config.model``. Without
    ``parameter_count`` there is no ``parameter_count`` tag (the trial adds it once ``fit`` has
    built the network, which is built once per trial).
    """
    name, args = config.model.name, dict(config.model.args)
    tags = {TAG_STAGE: config.train.stage, **describe_model(name, args, parameter_count)}
    if stage1_run_id is not None:
        tags[TAG_STAGE1_RUN] = stage1_run_id
    return tags


def describe_model(name: str, args: Mapping[str, Any], parameter_count: int | None = None) -> dict[str, str]:
    """``{"architecture": "unetpp", "encoder": "mobilenet_v2", "parameter_count": "3250281"}``: the
    family and encoder from ``depthcore.models.describe_model`` (each family says its own encoder)."""
    described = depthcore_describe(name, dict(args))
    tags = {TAG_ARCHITECTURE: described["architecture"], TAG_ENCODER: described["encoder"]}
    if parameter_count is not None:
        tags[TAG_PARAMETER_COUNT] = str(int(parameter_count))
    return tags
