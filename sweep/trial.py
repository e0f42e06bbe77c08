"""One trial: sampled parameters -> depthcore config -> ``depthcore.engine.fit(report=...)``.

This module and ``tuner.py`` are the only modules that import Ray; the driver's callback that
closes a trial's MLflow run and prints its progress line (``TrialStateCallback``) is here too.
The engine calls ``report(metrics, checkpoint_dir)`` once per epoch; the adapter
forwards it to ``ray.tune.report`` with a checkpoint, logs the epoch to the trial's
MLflow run, and — whenever the validation metric improves — logs that epoch's
checkpoint and a preview image, so even a trial that ASHA stops early leaves its best
checkpoint in MLflow.

The training code (torch, the engine, the model families, matplotlib for the preview) is
imported inside the functions that use it, not at module level: the sweep's driver imports
this module for ``TrialContext`` and every trial process imports it to unpickle one, and
neither should pay seconds of imports for code that runs only once a trial trains.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray.tune
import ray.util
from ray.tune import Checkpoint
from ray.tune.experiment import Trial

from depthcore.config import ExperimentConfig, flatten
from depthcore.stages import STAGES, worst
from sweep.select import best_in_history
from sweep.spec import SweepSpec
from sweep.study import STAGE1_PARAM
from sweep.tracking import (
    TAG_ARCHITECTURE,
    TAG_OPTUNA_TRIAL,
    TAG_PARAMETER_COUNT,
    TAG_RAY_NODE,
    TAG_RAY_TRIAL,
    USER_ATTR_MLFLOW,
    TrialTracker,
    finish_trial_run,
)
from sweep.tracking.store import TrackingError, bound_http_retries, first_line
from sweep.tracking.views import trial_number, trial_run_name
from sweep.trial_tags import trial_tags

if TYPE_CHECKING:
    import torch

OPTUNA_TRIAL_KEY = "optuna_trial"
"""Config key the searcher adds: the Optuna trial number, tagged on the MLflow run."""


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


@dataclass(frozen=True)
class TrialRun:
    """What a trial's MLflow run is made of: written by the trial, and again by ``sweep.relog``."""

    key: str
    config: ExperimentConfig
    params: dict[str, Any]
    tags: dict[str, Any]
    name: str


def trial_run(ctx: TrialContext, config: dict[str, Any], trial_id: str, out_dir: str, node: str | None = None) -> TrialRun:
    """The run of trial ``trial_id`` with sampled ``config``: its depthcore config, params, tags and name."""
    cfg, lineage = build_trial_config(ctx, config, out_dir)
    tags = {**trial_tags(cfg, stage1_run_id=lineage.get("stage1_run_id")), TAG_RAY_TRIAL: trial_id}
    if node:
        tags[TAG_RAY_NODE] = node
    if OPTUNA_TRIAL_KEY in config:
        tags[TAG_OPTUNA_TRIAL] = str(config[OPTUNA_TRIAL_KEY])
    params = cfg.flat()
    if lineage:
        params["stage1_trial"] = lineage["stage1_trial"]
    number = trial_number(config.get(OPTUNA_TRIAL_KEY), trial_id)
    return TrialRun(trial_key(ctx.study_name, ctx.stage, trial_id), cfg, params, tags,
                    trial_run_name(tags[TAG_ARCHITECTURE], ctx.stage, number))


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
        from depthcore.checkpoint import load_checkpoint

        model = parent.get("model") or load_checkpoint(str(parent["checkpoint"]))["model"]
        raw["model"] = {"name": model["name"], "args": dict(model["args"])}
    return ExperimentConfig.from_dict(raw, source=f"trial config ({ctx.stage})"), lineage


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune function trainable: ``config`` holds the sampled parameters (nested by ``/``).

    The engine's own output (its epoch checkpoints, ``best/``) and the preview images go to a
    scratch folder removed when the trial ends: what a trial keeps is what it reported, the
    checkpoints Ray copies to the storage path at each ``report``. Not Ray's trial folder: on
    the driver's node Ray copies that folder to the storage path again and again, and never
    deletes what the engine pruned (a 3-epoch trial left 3 epoch checkpoints there).
    """
    # Ray logs "Checkpoint successfully created at: ..." for every epoch of every trial; the
    # driver's one line per trial is the progress output.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    bound_http_retries()
    trial_id = ray.tune.get_context().get_trial_id()
    prefix = f"depthsweep-{trial_id}-"
    for killed in Path(tempfile.gettempdir()).glob(f"{prefix}*"):  # an earlier attempt's, killed on this node
        shutil.rmtree(killed, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        _train(config, ctx, trial_id, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train(config: dict[str, Any], ctx: TrialContext, trial_id: str, scratch: Path) -> None:
    from depthcore.checkpoint import FILENAME
    from depthcore.engine import fit
    from depthcore.models import count_parameters

    run = trial_run(ctx, config, trial_id, str(scratch / "train"), node=ray.util.get_node_ip_address())
    cfg = run.config
    tracker = TrialTracker(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id, run.key)
    try:
        tracker.start(params=run.params, tags=run.tags, run_name=run.name)
    except TrackingError as err:
        # The server went away after the sweep's check: train without it, and the stage's end
        # (or --resume) logs the trial from Ray's records (sweep.relog).
        tracker.go_offline(str(err))
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
            epoch = int(metrics["epoch"])
            tracker.log_best(metrics, epoch)
            # The engine's weights-only copy of this epoch (best/): export needs no optimizer state.
            weights = scratch / "train" / "best"
            tracker.log_best_checkpoint(weights if (weights / FILENAME).is_file() else checkpoint_dir)
            try:
                tracker.log_preview(_preview(cfg, built["model"], epoch, scratch), epoch)
            except Exception as err:  # a picture is not worth a trial
                print(f"trial {trial_id}: preview image failed: {err}", flush=True)
        checkpoint = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        # The run id travels with the result, so the searcher links the Optuna trial to it.
        ray.tune.report({**metrics, USER_ATTR_MLFLOW: tracker.run_id or ""}, checkpoint=checkpoint)

    built: dict[str, Any] = {}

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


def keep_optimizer_in_latest_only(trial_dir: Path) -> None:
    """An ended trial's checkpoints in Ray's storage, but the newest, keep their weights only.

    Ray keeps a trial's best checkpoint beside its latest; only the latest is resumed from, and
    with Adam the optimizer state is two thirds of a checkpoint (``drop_optimizer_state``). Done by
    the driver when the trial has ended: Ray has then deleted what it rotated out, and a trial
    that the scheduler stops never returns from its last report to do it itself.
    """
    from depthcore.checkpoint import drop_optimizer_state
    from depthcore.errors import DataError

    for folder in sorted(trial_dir.glob("checkpoint_*"))[:-1]:
        try:
            drop_optimizer_state(folder)
        except DataError:
            pass  # not a depthcore checkpoint (the fixed-work trials of tests and benchmarks)
        except OSError as err:
            print(f"{folder}: optimizer state not dropped ({err})", flush=True)


def _preview(cfg: ExperimentConfig, model: torch.nn.Module, epoch: int, scratch: Path) -> Path:
    """Input | ground truth | prediction on validation frames of four scenes (NYU), by the model being trained."""
    from depthcore.loaders import nyu_dataset
    from depthcore.viz import one_per_scene, preview_predictions

    data = nyu_dataset(cfg.replace(data={"augment": False}), "val")
    path = scratch / "preview.png"
    device = next(model.parameters()).device
    return preview_predictions(model, data, path, n=4, device=device, indices=one_per_scene(data.scenes, 4),
                               title=f"validation split, epoch {epoch}")


# -- the driver's view of a trial's start and end ------------------------------------------------


class TrialStateCallback(ray.tune.Callback):
    """Driver-side: when a trial ends, tag its MLflow run completed / stopped early / failed,
    and print a progress line (counts and the best value so far).

    A trial stopped by ASHA never returns from its training function, so its final
    state can only be known here.
    """

    def __init__(self, ctx: TrialContext, max_epochs: int, num_samples: int) -> None:
        self.ctx = ctx
        self.max_epochs = max_epochs
        self.num_samples = num_samples
        self.states: dict[str, str] = {}
        self.best: float | None = None
        self.tracking_errors = 0

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        params = ", ".join(f"{k}={_short(v)}" for k, v in flatten(trial.config).items())
        print(f"[{self.ctx.stage}] trial {trial.trial_id} started: {params}", flush=True)

    def _finish(self, trial: Trial, state: str, trials: list[Trial]) -> None:
        self.states[trial.trial_id] = state
        if trial.path:
            keep_optimizer_in_latest_only(Path(trial.path))
        try:  # no run to close when the trial failed before it started one
            finish_trial_run(self.ctx.tracking_uri, self.ctx.parent_run_id,
                             trial_key(self.ctx.study_name, self.ctx.stage, trial.trial_id), state)
        except Exception as err:  # MLflow is away: sweep.relog closes the run at the stage's end
            self.tracking_errors += 1
            if self.tracking_errors == 1:
                print(f"[{self.ctx.stage}] MLflow is not answering ({first_line(err)}); the trials go on, and "
                      f"the stage's end logs what it missed", flush=True)
        stage = self.ctx.spec.stages[self.ctx.stage]
        last = trial.last_result or {}
        value = last.get(stage.metric)
        if value is not None and math.isfinite(value):
            if self.best is None or (value < self.best if stage.mode == "min" else value > self.best):
                self.best = value
        counts = {s: list(self.states.values()).count(s) for s in ("completed", "stopped_early", "failed")}
        running = sum(1 for t in trials if t.status == Trial.RUNNING)
        print(f"[{self.ctx.stage}] trial {trial.trial_id} {state.replace('_', ' ')} after "
              f"{int(last.get('epoch', 0))} epoch(s): {stage.metric} {_short(value)} | "
              f"{len(self.states)}/{self.num_samples} done ({counts['completed']} completed, "
              f"{counts['stopped_early']} stopped early, {counts['failed']} failed), {running} running, "
              f"best {stage.metric} {_short(self.best)}", flush=True)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        last = trial.last_result or {}
        value = last.get(self.ctx.spec.stages[self.ctx.stage].metric)
        if value is None or not math.isfinite(value):
            self._finish(trial, "failed", trials)
        else:
            self._finish(trial, "completed" if int(last.get("epoch", 0)) >= self.max_epochs else "stopped_early",
                         trials)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, "failed", trials)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
