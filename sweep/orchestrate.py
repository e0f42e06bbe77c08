"""Run the stages of a validated sweep: data once, Ray up, one Tuner per stage, a summary."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from depthcore.data import generate_synthetic, prepare_nyu_cache
from sweep.space import SpecError, SweepSpec
from sweep.tracking import (
    TAG_ARCHITECTURE,
    TAG_TRIAL_STATE,
    default_artifact_root,
    default_tracking_uri,
    ensure_experiment,
    find_trial_run,
    finish_parent,
    start_parent_run,
)
from sweep.trainable import TrialContext
from sweep.tuner import build_tuner, model_first_points, study_exists

TOPK_FILE = "stage1_topk.json"


def prepare_data(spec: SweepSpec, stages: list[str]) -> dict[str, str]:
    """Generate the synthetic dataset if asked and missing; prepare the resized NYU cache once.

    Returns flat ``data/...`` paths for the trial configs.
    """
    paths = spec.data.paths()
    synthetic = spec.data.synthetic
    if synthetic is not None and not Path(paths["data/nyu_path"]).is_file():
        print(f"generating the synthetic dataset in {synthetic.out}", flush=True)
        generate_synthetic(**synthetic.generator_kwargs())
    source = Path(paths["data/nyu_path"])
    if source.suffix == ".mat":
        size = spec.data.cache_size or spec.stage_fixed(stages[0]).get("data/size")
        if size is None:
            raise SpecError(f"{spec.path}: data.cache_size: needed when data/size is searched, found null")
        folder = source.parent if synthetic is not None else Path(spec.study.output_dir) / "cache"
        cache = folder / f"{source.stem}_cache_{size[0]}x{size[1]}.h5"
        if not cache.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            print(f"preparing the NYU cache {cache} (once for all trials)", flush=True)
            prepare_nyu_cache(source, cache, size=tuple(size), split_file=paths.get("data/split_file"))
        paths["data/nyu_path"] = str(cache)
    return paths


@dataclass
class _Finished:
    """One trial of a finished stage with a finite validation value: its best epoch and MLflow run."""

    result: Any  # ray.tune.Result
    trial_id: str
    value: float
    """Best value of the stage's validation metric over the trial's epochs."""
    row: Any
    """Index of that epoch in ``result.metrics_dataframe``."""
    run_id: str
    tags: dict[str, str]


def _finished_trials(results: tune.ResultGrid, ctx: TrialContext) -> list[_Finished]:
    """The stage's trials that reported the selection metric, each looked up once in MLflow."""
    from mlflow import MlflowClient

    stage = ctx.spec.stages[ctx.stage]
    client = MlflowClient(ctx.tracking_uri)
    finished = []
    for result in results:  # type: ignore[attr-defined]  # ResultGrid iterates via __getitem__/__len__
        df = result.metrics_dataframe
        if df is None or stage.metric not in df or df[stage.metric].isna().all():
            continue
        row = df[stage.metric].idxmin() if stage.mode == "min" else df[stage.metric].idxmax()
        trial_id = result.metrics["trial_id"]
        run_id = find_trial_run(ctx.tracking_uri, ctx.parent_run_id, f"{ctx.study_name}/{ctx.stage}/{trial_id}") or ""
        tags = dict(client.get_run(run_id).data.tags) if run_id else {}
        finished.append(_Finished(result, trial_id, float(df[stage.metric][row]), row, run_id, tags))
    return finished


def _stage1_topk(finished: list[_Finished], ctx: TrialContext, k: int, per_architecture: bool) -> list[dict[str, Any]]:
    """The k stage-1 trials (per architecture, or overall) with the best validation value, with their checkpoints."""
    stage = ctx.spec.stages["nyu"]
    rows = []
    for trial in finished:
        checkpoint = trial.result.get_best_checkpoint(stage.metric, stage.mode)
        if trial.result.error or checkpoint is None:
            continue
        rows.append({"trial_id": trial.trial_id, "value": trial.value, "checkpoint": checkpoint.path,
                     "run_id": trial.run_id, "architecture": trial.tags.get(TAG_ARCHITECTURE, "?")})
    rows.sort(key=lambda r: r["value"], reverse=stage.mode == "max")
    if not per_architecture:
        return rows[:k]
    taken: dict[str, int] = {}
    chosen = []
    for row in rows:
        if taken.get(row["architecture"], 0) < k:
            taken[row["architecture"]] = taken.get(row["architecture"], 0) + 1
            chosen.append(row)
    return chosen


def _run_stage(ctx: TrialContext, sweep_dir: Path, storage_url: str, resume: bool,
               stage1_choices: list[str] | None) -> tune.ResultGrid:
    spec, stage = ctx.spec, ctx.stage
    ray_dir = sweep_dir / "ray"

    def new_tuner(first_points: list[dict[str, Any]] | None = None) -> tune.Tuner:
        return build_tuner(ctx, storage_url=storage_url, optuna_study=f"{ctx.study_name}-{stage}", ray_dir=ray_dir,
                           num_samples=spec.stages[stage].num_samples, max_epochs=spec.max_epochs(stage),
                           stage1_choices=stage1_choices, first_points=first_points)

    if resume and tune.Tuner.can_restore(str(ray_dir / stage)):
        fresh = new_tuner()  # the same trainable and callbacks, restored state
        trainable = fresh._local_tuner._trainable  # type: ignore[union-attr]
        tuner = tune.Tuner.restore(str((ray_dir / stage).resolve()), trainable=trainable,
                                   resume_unfinished=True, resume_errored=True, restart_errored=False)
    else:
        # Not on resume: a resumed study already holds these trials, and enqueueing would add more.
        tuner = new_tuner(None if resume else model_first_points(spec, stage))
    return tuner.fit()


def run_sweep(spec: SweepSpec, stages: list[str], sweep_dir: Path, *, resume: bool, address: str | None,
              stage1_from: Path | None) -> int:
    """Run ``stages`` of ``spec`` into ``sweep_dir``; returns the exit code."""
    sweep_dir = sweep_dir.resolve()
    name = sweep_dir.name
    storage_url = spec.study.storage or f"sqlite:///{sweep_dir / 'optuna.db'}"
    tracking_uri = default_tracking_uri(spec.study.output_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        if not resume and study_exists(storage_url, f"{name}-{stage}"):
            raise SpecError(f"Optuna study {name}-{stage} already exists in {storage_url}: "
                            f"pass --resume to continue it, or choose another study.name")
    (sweep_dir / "sweep.json").write_text(json.dumps(
        {"name": name, "spec": str(spec.path), "stages": stages, "optuna_storage": storage_url,
         "mlflow_tracking_uri": tracking_uri, "spec_resolved": spec.to_dict()}, indent=2, default=str))
    data_paths = prepare_data(spec, stages)

    started = time.perf_counter()
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False)
    try:
        experiment_id = ensure_experiment(name, tracking_uri, default_artifact_root(spec.study.output_dir))
        threads = max(1, int(spec.resources.cpu))
        summary: dict[str, Any] = {}
        stage1_choices: list[str] | None = None
        stage1: dict[str, dict[str, str]] = {}
        for stage in stages:
            parent = start_parent_run(experiment_id, stage, name, spec.to_dict(), tracking_uri, resume)
            if stage == "diw":
                topk = _load_topk(stage1_from or sweep_dir)
                stage1 = {row["trial_id"]: row for row in topk}
                stage1_choices = list(stage1)
                print(f"[diw] fine-tuning the top {len(topk)} stage-1 trials: "
                      + ", ".join(f"{r['trial_id']} ({r.get('architecture', '?')}, {r['value']:.4f})" for r in topk), flush=True)
            ctx = TrialContext(spec=spec, stage=stage, tracking_uri=tracking_uri, experiment_id=experiment_id,
                               parent_run_id=parent, threads=threads, study_name=name, data_paths=data_paths,
                               stage1=stage1)
            results = _run_stage(ctx, sweep_dir, storage_url, resume, stage1_choices)
            if _interrupted(results, spec.stages[stage].num_samples, spec.study.time_budget_s):
                finish_parent(parent, {"interrupted": "true"}, tracking_uri, status="KILLED")
                print(f"\n[{stage}] interrupted after {results.num_terminated} finished trial(s); the state is saved. "
                      f"Continue with:\n  python -m sweep.run {spec.path} --resume {sweep_dir}", flush=True)
                return 130
            finished = _finished_trials(results, ctx)
            best = _best_per_architecture(finished, ctx)
            summary[stage] = best
            finish_parent(parent, {f"best/{arch}/{k}": v for arch, row in best.items()
                                   for k, v in row.items() if k in ("value", "trial_id", "run_id")}, tracking_uri)
            if stage == "nyu":
                diw = spec.stages.get("diw")
                topk = _stage1_topk(finished, ctx, diw.top_k or 1 if diw else 1,
                                    diw.top_k_per_architecture if diw else False)
                (sweep_dir / TOPK_FILE).write_text(json.dumps(topk, indent=2))
    finally:
        if not address:
            ray.shutdown()
    from sweep.summary import print_summary

    print_summary(summary, spec, sweep_dir, tracking_uri, time.perf_counter() - started)
    return 0


def _interrupted(results: tune.ResultGrid, num_samples: int, time_budget_s: float | None) -> bool:
    """Whether Tune returned early because of Ctrl-C / SIGINT (it returns normally, with unfinished trials)."""
    unfinished = len(results) - results.num_terminated - results.num_errors
    return unfinished > 0 or (time_budget_s is None and len(results) < num_samples)


def _load_topk(sweep_dir: Path) -> list[dict[str, Any]]:
    path = sweep_dir / TOPK_FILE
    if not path.is_file():
        raise SpecError(f"stage diw: {path} not found; run stage nyu first or pass --stage1-from SWEEP_DIR")
    rows = json.loads(path.read_text())
    if not rows:
        raise SpecError(f"stage diw: {path} lists no finished stage-1 trial")
    return rows


def _best_per_architecture(finished: list[_Finished], ctx: TrialContext) -> dict[str, dict[str, Any]]:
    """Best trial per architecture by its best validation value (the selection metric only)."""
    stage = ctx.spec.stages[ctx.stage]
    best: dict[str, dict[str, Any]] = {}
    for trial in finished:
        arch = trial.tags.get(TAG_ARCHITECTURE, "?")
        current = best.get(arch)
        value = trial.value
        if current is None or (value < current["value"] if stage.mode == "min" else value > current["value"]):
            df, row = trial.result.metrics_dataframe, trial.row
            checkpoint = trial.result.get_best_checkpoint(stage.metric, stage.mode)
            best[arch] = {
                "value": value, "metric": stage.metric, "trial_id": trial.trial_id, "run_id": trial.run_id,
                "epoch": int(df["epoch"][row]), "state": trial.tags.get(TAG_TRIAL_STATE, "?"),
                "params": {k: v for k, v in trial.result.config.items()},
                "metrics": {k: float(df[k][row]) for k in df.columns
                            if k.startswith("val/") and isinstance(df[k][row], float) and math.isfinite(df[k][row])},
                "checkpoint": checkpoint.path if checkpoint else "",
            }
    return best
