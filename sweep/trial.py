"""One trial: sampled parameters -> depthcore config -> ``depthcore.engine.fit(report=...)``.

This module and ``tuner.py`` are the only modules that import Ray.
The engine calls ``report(metrics, checkpoint_dir)`` once per epoch; the adapter
forwards it to ``ray.tune.report`` with a checkpoint, logs the epoch to the trial's
MLflow run, and — whenever the validation metric improves — logs that epoch's
checkpoint and a preview image, so even a trial that ASHA stops early leaves its best
checkpoint in MLflow.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.tune
import torch
from ray.tune import Checkpoint

from depthcore.checkpoint import load_checkpoint
from depthcore.config import ExperimentConfig, flatten
from depthcore.engine import fit
from depthcore.loaders import nyu_dataset
from depthcore.models import count_parameters
from depthcore.stages import STAGES, worst
from depthcore.viz import preview_predictions
from sweep.select import best_in_history
from sweep.spec import SweepSpec
from sweep.tracking import TAG_OPTUNA_TRIAL, TAG_PARAMETER_COUNT, TAG_RAY_TRIAL, USER_ATTR_MLFLOW, TrialTracker
from sweep.trial_tags import trial_tags

OPTUNA_TRIAL_KEY = "optuna_trial"
"""Config key the searcher adds: the Optuna trial number, tagged on the MLflow run."""
STAGE1_PARAM = "stage1_trial"
"""Stage-2 parameter naming the stage-1 trial whose best checkpoint is fine-tuned."""


@dataclass
class TrialContext:
    """What every trial of one stage needs besides its sampled parameters (picklable)."""

    spec: SweepSpec
    stage: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    threads: int
    study_name: str
    data_paths: dict[str, str] = field(default_factory=dict)
    """Flat ``data/...`` paths prepared for the trials (e.g. the resized NYU cache)."""
    stage1: dict[str, dict[str, str]] = field(default_factory=dict)
    """Stage 2 only: stage-1 trial id -> ``{"checkpoint", "run_id", "trial_id"}``."""


def trial_key(study: str, stage: str, trial_id: str) -> str:
    """Identifies one trial across retries and resumes: the MLflow run is looked up by it."""
    return f"{study}/{stage}/{trial_id}"


def build_trial_config(ctx: TrialContext, params: dict[str, Any], out_dir: str) -> tuple[ExperimentConfig, dict[str, str]]:
    """The depthcore config of a trial, and its lineage tags (stage 2)."""
    flat = flatten(params)
    lineage: dict[str, str] = {}
    extra = {**ctx.data_paths, "train/out_dir": out_dir, "train/threads": ctx.threads, "train/verbose": False}
    if "data/num_workers" not in {**ctx.spec.stage_fixed(ctx.stage), **ctx.spec.stage_space(ctx.stage)}:
        # The trial's CPU share: torch's threads on all of it, loader processes on all but one.
        extra["data/num_workers"] = max(0, ctx.threads - 1)
    flat.pop(OPTUNA_TRIAL_KEY, None)
    parent: dict[str, Any] | None = None
    if STAGES[ctx.stage].finetunes:
        parent = ctx.stage1[str(flat.pop(STAGE1_PARAM))]
        extra["train/init_checkpoint"] = parent["checkpoint"]
        lineage = {"stage1_run_id": parent["run_id"], "stage1_trial": parent["trial_id"]}
    raw = ctx.spec.trial_config(ctx.stage, flat, **extra)
    raw.setdefault("train", {})["stage"] = ctx.stage
    raw["train"]["select_metric"] = ctx.spec.stages[ctx.stage].metric
    if parent is not None:
        # The model is the stage-1 checkpoint's (recorded in the top-k rows, so the checkpoint is
        # opened once, by fit); recording it keeps the run's model/* params true.
        model = parent.get("model") or load_checkpoint(str(parent["checkpoint"]))["model"]
        raw["model"] = {"name": model["name"], "args": dict(model["args"])}
    return ExperimentConfig.from_dict(raw, source=f"trial config ({ctx.stage})"), lineage


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune function trainable: ``config`` holds the sampled parameters (nested by ``/``)."""
    # Ray logs "Checkpoint successfully created at: ..." for every epoch of every trial; the
    # driver's one line per trial is the progress output.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    tune_ctx = ray.tune.get_context()
    trial_id = tune_ctx.get_trial_id()
    out_dir = str(Path(tune_ctx.get_trial_dir()) / "train")
    cfg, lineage = build_trial_config(ctx, config, out_dir)
    tags = {**trial_tags(cfg, stage1_run_id=lineage.get("stage1_run_id")), TAG_RAY_TRIAL: trial_id}
    if OPTUNA_TRIAL_KEY in config:
        tags[TAG_OPTUNA_TRIAL] = str(config[OPTUNA_TRIAL_KEY])
    tracker = TrialTracker(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id,
                           trial_key(ctx.study_name, ctx.stage, trial_id))
    params = cfg.flat()
    if lineage:
        params["stage1_trial"] = lineage["stage1_trial"]
    tracker.start(params=params, tags=tags, run_name=f"{ctx.stage}-{trial_id}")
    tracker.log_config(cfg.to_dict())
    metric, mode = ctx.spec.stages[ctx.stage].metric, ctx.spec.stages[ctx.stage].mode
    best = {"value": worst(mode)}
    if tracker.resumed and tracker.run_id:
        # A resumed trial keeps the best epoch it logged before the interruption.
        earlier, _ = best_in_history(tracker.client, tracker.run_id, metric, mode)
        if math.isfinite(earlier):
            best["value"] = earlier

    def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        tracker.log_epoch(metrics, step=int(metrics["epoch"]))
        value = metrics.get(metric, math.nan)
        improved = math.isfinite(value) and (value < best["value"] if mode == "min" else value > best["value"])
        if improved and checkpoint_dir is not None:
            best["value"] = value
            tracker.log_best_checkpoint(checkpoint_dir)
            try:
                tracker.log_preview(_preview(cfg, built["model"]))
            except Exception as err:  # a picture is not worth a trial
                print(f"trial {trial_id}: preview image failed: {err}", flush=True)
        checkpoint = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        # The run id travels with the result, so the searcher links the Optuna trial to it.
        ray.tune.report({**metrics, USER_ATTR_MLFLOW: tracker.run_id or ""}, checkpoint=checkpoint)

    built: dict[str, torch.nn.Module] = {}

    def on_model(model: torch.nn.Module) -> None:
        # The network fit trains: counted here, and previewed live (it holds the epoch just saved).
        built["model"] = model
        tracker.set_tags({TAG_PARAMETER_COUNT: count_parameters(model)["total"]})

    restored = ray.tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as path:
            fit(cfg, report=report, resume_from=path, on_model=on_model)
    else:
        fit(cfg, report=report, on_model=on_model)


def _preview(cfg: ExperimentConfig, model: torch.nn.Module) -> Path:
    """Input | ground truth | prediction on the first validation frames (NYU), by the model being trained."""
    data = nyu_dataset(cfg.replace(data={"augment": False}), "val")
    path = Path(tempfile.mkdtemp(prefix="preview-")) / "preview.png"
    device = next(model.parameters()).device
    return preview_predictions(model, data, path, n=4, device=device)
