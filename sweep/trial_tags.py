"""Tags that describe a trial in MLflow: architecture, stage, encoder, parameter count, lineage."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from depthcore._registry import MODELS
from depthcore.checkpoint import load_checkpoint
from depthcore.config import ExperimentConfig
from depthcore.models import PRESETS, count_parameters, model_from_spec
from sweep.space import family
from sweep.tracking import TAG_ARCHITECTURE, TAG_ENCODER, TAG_PARAMETER_COUNT, TAG_STAGE, TAG_STAGE1_RUN


def trial_tags(
    config: ExperimentConfig,
    *,
    parameter_count: int | None = None,
    stage1_run_id: str | None = None,
) -> dict[str, str]:
    """``architecture``, ``stage``, ``encoder``, ``parameter_count`` (and ``stage1_run_id``) of a trial.

    Stage ``diw`` trains the stage-1 checkpoint's model, so its model is read from
    ``train.init_checkpoint``, not from ``config.model``. Without ``parameter_count`` the
    model is built (without pretrained weights) to count its parameters.
    """
    if config.train.stage == "diw" and config.train.init_checkpoint:
        spec = load_checkpoint(config.train.init_checkpoint)["model"]
        name, args = spec["name"], dict(spec["args"])
    else:
        name, args = config.model.name, dict(config.model.args)
    tags = {TAG_STAGE: config.train.stage, **describe_model(name, args, parameter_count)}
    if stage1_run_id is not None:
        tags[TAG_STAGE1_RUN] = stage1_run_id
    return tags


def describe_model(name: str, args: Mapping[str, Any], parameter_count: int | None = None) -> dict[str, str]:
    """``{"architecture": "unetpp", "encoder": "mobilenet_v2", "parameter_count": "3250281"}``.

    ``architecture`` is the family (a preset such as ``unetpp_3m`` maps to ``unetpp``);
    ``encoder`` is U-Net++'s encoder, or for LR-ASPP its backbone ``mobilenet_v3_<size>``
    with ``_x<width_mult>`` when widened.
    """
    architecture = family(name)
    defaults = {
        p.name: p.default
        for p in inspect.signature(MODELS.get(architecture)).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    preset_args = dict(PRESETS[name].args) if name in PRESETS else {}
    resolved = {**defaults, **preset_args, **args}
    if architecture == "lraspp":
        width = float(resolved.get("width_mult", 1.0))
        encoder = f"mobilenet_v3_{resolved.get('size', 'large')}" + ("" if width == 1.0 else f"_x{width:g}")
    else:
        encoder = str(resolved.get("encoder", ""))
    if parameter_count is None:
        parameter_count = count_parameters(model_from_spec({"name": name, "args": dict(args)}))["total"]
    return {TAG_ARCHITECTURE: architecture, TAG_ENCODER: encoder, TAG_PARAMETER_COUNT: str(int(parameter_count))}


