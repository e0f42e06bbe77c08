"""Run the stages of a validated sweep, in order: data once, the Ray runtime, each stage through
``sweep.tuner``, its winners and stage-2 top-k through ``sweep.select``, a summary.

No Ray here: ``sweep.tuner`` hands back plain records.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from depthcore.baselines import split_baselines
from depthcore.config import ExperimentConfig, ModelConfig, set_dotted
from depthcore.data import generate_synthetic
from depthcore.data.cache import ensure_nyu_cache
from depthcore.data.synthetic import synthetic_is_current
from depthcore.preflight import check_data, check_device, check_output_dir
from depthcore.stages import DEPTH_STAGE, DEPTH_TASK, FIRST_STAGE, ORDINAL_STAGE, STAGES
from sweep.preflight import RESOURCE_WAIT_S, check_sweep, wait_for_cluster_resources
from sweep.record import SweepRecord, is_sweep_dir, read_record, write_record
from sweep.redact import redact
from sweep.relog import relog_stage
from sweep.select import Study, TrialRun, load_study
from sweep.spec import SpecError, SweepSpec
from sweep.stores import optuna_storage_url, ray_storage_path
from sweep.study import StageOutcome, TrialRecord, optuna_storage, study_exists
from sweep.tracking import (
    TAG_RAY_TRIAL,
    default_artifact_root,
    default_tracking_uri,
    ensure_experiment,
    finish_parent,
    start_parent_run,
)
from sweep.trial import TrialContext, run_trial
from sweep.tuner import cluster_nodes, ray_runtime, run_stage

TOPK_FILE = "stage1_topk.json"


def prepare_data(spec: SweepSpec, stages: list[str]) -> dict[str, str]:
    """Generate the synthetic dataset if asked and missing or made by another generator version or with
    other arguments (``synthetic_is_current``); check every data file the stages read
    (before any compute: one line naming the file); prepare the resized NYU cache once.

    Returns flat ``data/...`` paths for the trial configs.
    """
    paths = spec.data.paths()
    synthetic = spec.data.synthetic
    if synthetic is not None:
        kwargs = synthetic.generator_kwargs()
        out_dir = kwargs.pop("out_dir")
        if not synthetic_is_current(out_dir, **kwargs):
            check_output_dir(out_dir, f"{spec.path}: data.synthetic.out")
            stale = Path(paths["data/nyu_path"]).is_file()
            print(f"generating the synthetic dataset in {synthetic.out}"
                  + (" (the one there is from another generator version or other settings)" if stale else ""),
                  flush=True)
            generate_synthetic(out_dir, **kwargs)
    source = Path(paths["data/nyu_path"])
    size = spec.data.cache_size or spec.stage_fixed(FIRST_STAGE).get("data/size")
    raw: dict[str, Any] = {"train": {"stage": FIRST_STAGE}}
    for key, value in {**paths, **({"data/size": list(size)} if size else {})}.items():
        set_dotted(raw, key, value)
    check_data(ExperimentConfig.from_dict(raw, source=f"{spec.path}: data"))
    if source.suffix == ".mat":
        if size is None:
            raise SpecError(f"{spec.path}: data.cache_size: needed when data/size is searched, found null")
        folder = source.parent if synthetic is not None else Path(spec.study.output_dir) / "cache"
        # The cache's name carries the source's identity: another file under the same name gets its own.
        paths["data/nyu_path"] = str(ensure_nyu_cache(source, tuple(size), paths.get("data/split_file"), folder))
    return paths


def run_sweep(spec: SweepSpec, stages: list[str], sweep_dir: Path, *, resume: bool, address: str | None,
              stage1_from: Path | None, overrides: list[str] | None = None, storage_path: str | None = None,
              resource_wait_s: float = RESOURCE_WAIT_S,
              trainable: Callable[[dict[str, Any], TrialContext], None] = run_trial) -> int:
    """Run ``stages`` of ``spec`` into ``sweep_dir``; returns the exit code.

    ``storage_path``: Ray's results and checkpoints (a folder every node of the cluster reaches),
    else ``<sweep_dir>/ray``. ``resource_wait_s``: on a cluster, how long to wait for a node that
    can run one trial. ``trainable`` runs one trial (default: depthcore training; the
    overhead benchmark passes a trial of fixed work).
    """
    sweep_dir = sweep_dir.resolve()
    name = sweep_dir.name
    # Checks before compute and before anything is written: each one line, exit 2.
    check_output_dir(spec.study.output_dir, "study.output_dir")
    check_output_dir(sweep_dir, "the sweep folder")
    for stage in stages:
        device = spec.stage_fixed(stage).get("train/device")
        if isinstance(device, str):
            check_device(device, f"{spec.path}: fixed.train/device")
    check_sweep(spec, address, os.environ.get("MLFLOW_TRACKING_URI", "").strip() or None)
    storage_url = optuna_storage_url(spec.study.storage, sweep_dir)
    recorded = read_record(sweep_dir).ray_storage_path if resume and is_sweep_dir(sweep_dir) else None
    ray_dir = ray_storage_path(storage_path, sweep_dir, recorded)
    check_output_dir(ray_dir, "--storage-path" if storage_path else "Ray's storage folder")
    data_paths = prepare_data(spec, stages)
    baselines = validation_baselines(spec, stages, data_paths)
    tracking_uri = default_tracking_uri(spec.study.output_dir)
    for stage in stages:
        if not resume and study_exists(storage_url, f"{name}-{stage}"):
            raise SpecError(f"Optuna study {name}-{stage} already exists in {redact(storage_url)}: "
                            f"pass --resume to continue it, or choose another study.name")

    started = time.perf_counter()
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    # A new MLflow store takes seconds to create (its schema migrations): they run on another
    # thread while Ray's runtime starts, which mostly waits for its own processes to come up.
    pool = ThreadPoolExecutor(max_workers=1)
    experiment = pool.submit(ensure_experiment, name, tracking_uri, default_artifact_root(spec.study.output_dir))
    pool.shutdown(wait=False)  # the submitted call still runs to its end; result() waits for it
    with ray_runtime(address):
        if address:
            wait_for_cluster_resources(spec, address, cluster_nodes, resource_wait_s)
        # Written once the runtime can run a trial: a sweep refused until here leaves no folder.
        write_record(SweepRecord(dir=sweep_dir, name=name, spec_path=str(spec.path), stages=stages,
                                 optuna_storage=storage_url, tracking_uri=tracking_uri, spec=spec.to_dict(),
                                 overrides=list(overrides or []), ray_storage_path=str(ray_dir)))
        experiment_id = experiment.result()
        threads = max(1, int(spec.resources.cpu))
        stage1: dict[str, dict[str, Any]] = {}
        for stage in stages:
            parent = start_parent_run(experiment_id, stage, name, spec.to_dict(), tracking_uri, resume)
            if STAGES[stage].finetunes:
                topk = _load_topk(stage1_from or sweep_dir, stage)
                stage1 = {row["trial_id"]: row for row in topk}
                print(f"[{stage}] fine-tuning the top {len(topk)} stage-1 trials: "
                      + ", ".join(f"{r['trial_id']} ({r['architecture']}, {r['value']:.4f})" for r in topk), flush=True)
            ctx = TrialContext(spec=spec, stage=stage, tracking_uri=tracking_uri, experiment_id=experiment_id,
                               parent_run_id=parent, threads=threads, study_name=name, data_paths=data_paths,
                               stage1=stage1)
            outcome = run_stage(ctx, ray_dir, storage_url=storage_url, resume=resume,
                                stage1_choices=list(stage1) or None, trainable=trainable)
            if outcome.storage_error:
                finish_parent(parent, {"interrupted": "true"}, tracking_uri, status="KILLED")
                print(f"error: stage {stage}: the Optuna study's database {redact(storage_url)} stopped answering "
                      f"({outcome.storage_error}); the {outcome.finished} trial(s) that ended are kept in Ray's "
                      f"records. Once it answers again, continue with:\n  {resume_command(spec, sweep_dir, overrides)}",
                      flush=True)
                return 1
            if outcome.interrupted:
                finish_parent(parent, {"interrupted": "true"}, tracking_uri, status="KILLED")
                print(f"\n[{stage}] interrupted after {outcome.finished} finished trial(s); the state is saved. "
                      f"Continue with:\n  {resume_command(spec, sweep_dir, overrides)}", flush=True)
                return 130
            relogged = relog_stage(ctx, ray_dir / stage, optuna_storage(storage_url))
            if relogged:
                print(f"[{stage}] logged to MLflow what it missed while away: {len(relogged)} trial(s), from "
                      f"Ray's records", flush=True)
            study = load_study(tracking_uri, name)
            winners = study.winners().get(stage, {})
            summary[stage] = {arch: _summary_row(run, outcome) for arch, run in winners.items()}
            finish_parent(parent, {**{f"best/{arch}/{k}": v for arch, row in summary[stage].items()
                                      for k, v in row.items() if k in ("value", "trial_id", "run_id")},
                                   **{f"baseline/{name}/{k}": v for name, values in baselines.get(stage, {}).items()
                                      for k, v in values.items()}}, tracking_uri,
                          status="FINISHED" if winners else "FAILED")
            if not winners:
                print(f"error: stage {stage}: no trial finished with a finite {spec.stages[stage].metric}; "
                      f"first trial error: {_first_error(outcome)} (full tracebacks under {ray_dir / stage})",
                      flush=True)
                return 1
            nxt = next((s for s in stages[stages.index(stage) + 1:] if STAGES[s].finetunes), None)
            if nxt is not None:
                own = spec.stages[nxt]
                rows = stage1_topk(spec, study, stage, outcome, own.top_k or 1, own.top_k_per_architecture)
                (sweep_dir / TOPK_FILE).write_text(json.dumps(rows, indent=2))
    from sweep.summary import print_summary

    print_summary(summary, spec, sweep_dir, tracking_uri, time.perf_counter() - started, baselines,
                  optuna_storage=storage_url)
    return 0


def validation_baselines(spec: SweepSpec, stages: list[str], data_paths: dict[str, str]) -> dict[str, dict[str, dict[str, float]]]:
    """Per stage, each baseline of ``depthcore.baselines`` on the validation split the trials select on,
    under the stage's metric names (``val/rmse``, ``val/accuracy``, ...)."""
    found: dict[str, dict[str, dict[str, float]]] = {}
    for stage in stages:
        # The stage's data settings only: a fine-tuning stage's config would also need a checkpoint.
        raw = {"data": spec.trial_config(stage, {}, **data_paths).get("data", {}), "train": {"stage": FIRST_STAGE}}
        if "size" not in raw["data"] and spec.data.cache_size:
            raw["data"]["size"] = list(spec.data.cache_size)
        cfg = ExperimentConfig.from_dict(raw, source=f"{spec.path}: stage {stage}")
        part = DEPTH_STAGE.name if STAGES[stage].task == DEPTH_TASK else ORDINAL_STAGE.name
        numbers = split_baselines(cfg, "val", parts=(part,)).get(part, {})
        found[stage] = {name: {f"val/{k}": v for k, v in values.items() if f"val/{k}" in STAGES[stage].metrics}
                        for name, values in numbers.items()}
    return found


def resume_command(spec: SweepSpec, sweep_dir: Path, overrides: list[str] | None) -> str:
    """The command that continues this sweep, with the overrides it was started with."""
    sets = "".join(f" --set {item}" for item in overrides or [])
    return f"python -m sweep.run {spec.path}{sets} --resume {sweep_dir}"


def stage1_topk(spec: SweepSpec, study: Study, stage: str, outcome: StageOutcome, k: int,
                per_architecture: bool) -> list[dict[str, Any]]:
    """The rows of ``stage1_topk.json``: ``Study.top_k`` with each trial's best checkpoint and its model
    (so a stage-2 trial knows the model without opening the checkpoint)."""
    by_id = {record.trial_id: record for record in outcome.trials}
    rows = []
    for run in study.top_k(stage, k, per_architecture):
        record = by_id.get(_ray_id(run))
        if record is None or record.checkpoint is None:
            # Seen after a kill -9 and --resume: Ray's snapshot lost a finished trial's result.
            print(f"[{stage}] warning: trial {_ray_id(run)} ({run.architecture}, {run.metric} {run.value:.4f}) "
                  f"has no checkpoint in Ray's results; stage 2 leaves it out", flush=True)
            continue
        rows.append({"trial_id": record.trial_id, "value": run.value, "checkpoint": record.checkpoint,
                     "run_id": run.run_id, "architecture": run.architecture,
                     "model": _model(spec, stage, record)})
    return rows


def _ray_id(run: TrialRun) -> str:
    return run.tags.get(TAG_RAY_TRIAL) or run.trial_key.rsplit("/", 1)[-1]


def _model(spec: SweepSpec, stage: str, record: TrialRecord) -> dict[str, Any]:
    model = ModelConfig(**spec.trial_config(stage, record.params).get("model", {}))
    return {"name": model.name, "args": dict(model.args)}


def _summary_row(run: TrialRun, outcome: StageOutcome) -> dict[str, Any]:
    """One line of the end-of-sweep table: the winner's values at its best epoch."""
    record = next((r for r in outcome.trials if r.trial_id == _ray_id(run)), None)
    epoch_row = next((row for row in (record.history if record else []) if int(row.get("epoch", -1)) == run.epoch), {})
    return {"value": run.value, "metric": run.metric, "trial_id": _ray_id(run), "run_id": run.run_id,
            "epoch": run.epoch, "state": run.state, "params": dict(record.params) if record else {},
            "metrics": {k: float(v) for k, v in epoch_row.items() if k.startswith("val/") and isinstance(v, float)},
            "checkpoint": record.checkpoint or "" if record else ""}


def _first_error(outcome: StageOutcome) -> str:
    errors = [record.error for record in outcome.trials if record.error]
    return errors[0] if errors else "none (the trials reported no finite value)"


def _load_topk(sweep_dir: Path, stage: str) -> list[dict[str, Any]]:
    path = sweep_dir / TOPK_FILE
    if not path.is_file():
        raise SpecError(f"stage {stage}: {path} not found; run stage {FIRST_STAGE} first or pass --stage1-from SWEEP_DIR")
    rows = json.loads(path.read_text())
    if not rows:
        raise SpecError(f"stage {stage}: {path} lists no finished stage-1 trial")
    return rows
