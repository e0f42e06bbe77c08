"""Make Optuna, Ray's saved experiment state and MLflow agree before a stage is resumed.

A driver killed with SIGKILL (the OOM killer, a preempted node, a lost SSH session) stops
between writes to three stores that each record a trial: Optuna's study (written when a trial
ends), Ray's experiment snapshot (written every few seconds, so it lags) and the trial's MLflow
run (closed by the driver's callback). What the kill can leave, and what ``reconcile_stage``
makes of it, with the Optuna study as the record of how a trial ended:

- Optuna says a trial ended, Ray's snapshot still has it pending or running: Ray would train it
  again and tell Optuna a second time (``UpdateFinishedTrialError``). The snapshot is set to
  the end Optuna recorded (TERMINATED, or ERROR for a failed trial).
- Optuna has a trial running that Ray's snapshot does not know (Ray sampled it after its last
  snapshot): Ray will never resume it. It is told FAIL, its MLflow run is closed KILLED, and
  Ray samples a new trial in its place. The trial's folder stays on disk.
- Optuna has a trial running that Ray's snapshot has ended: Optuna missed the end (the driver
  died between the two writes, or the study's database stopped answering while the trial ran).
  It is told its end from Ray's records of the trial (each epoch's value, then COMPLETE, PRUNED
  or FAIL by the searcher's rules, ``sweep.study.tell_end``); FAIL when Ray kept no result.
- An MLflow run left RUNNING is closed with its Optuna trial's end (``completed``,
  ``stopped_early``, ``failed``), or KILLED when its trial was lost; runs of trials Ray resumes
  stay open (the trial reopens them).

Only the JSON text of Ray's snapshot and of its trial folders is read and changed here (trial ids,
statuses, results): no Ray import. Checkpoint references inside the snapshot are Ray objects; ``sweep.tuner`` makes
those restorable.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from depthcore.stages import better
from sweep.record import write_atomic
from sweep.study import report_epoch, tell_end
from sweep.tracking.store import (
    TAG_KIND,
    TAG_RAY_TRIAL,
    TAG_TRIAL_KEY,
    TAG_TRIAL_STATE,
    USER_ATTR_MLFLOW,
    USER_ATTR_RAY,
    client_for,
)

RAY_ENDED = ("TERMINATED", "ERROR")
LOST_ATTR = "depthsweep_lost"
"""Optuna user attribute on a trial told FAIL here: why it was lost."""
LOST_BY_KILL = "the sweep's driver was killed before Ray saved this trial; Ray sampled another in its place"
LOST_END = "the sweep's driver was killed after Ray ended this trial and before Optuna recorded it"
OPTUNA_TO_TRIAL_STATE = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "stopped_early",
                          TrialState.FAIL: "failed"}


@dataclass
class Reconciled:
    """What ``reconcile_stage`` changed (Ray trial ids / Optuna trial numbers / MLflow run ids)."""

    ray_ended: dict[str, str] = field(default_factory=dict)
    """Ray trial id -> the status written into Ray's snapshot."""
    optuna_failed: list[int] = field(default_factory=list)
    optuna_told: dict[int, str] = field(default_factory=dict)
    """Optuna trial number -> the end told from Ray's records of the trial."""
    mlflow_closed: dict[str, str] = field(default_factory=dict)
    """MLflow run id -> the MLflow status it was closed with."""

    def __bool__(self) -> bool:
        return bool(self.ray_ended or self.optuna_failed or self.optuna_told or self.mlflow_closed)

    def describe(self) -> str:
        return (f"{len(self.ray_ended)} trial(s) Ray would have rerun, {len(self.optuna_told)} trial(s) told Optuna "
                f"from Ray's records, {len(self.optuna_failed)} lost trial(s) told FAIL, {len(self.mlflow_closed)} "
                f"MLflow run(s) closed")


def latest_snapshot(stage_dir: Path) -> Path | None:
    """Ray's newest experiment snapshot of a stage (the one ``Tuner.restore`` reads), or None."""
    found = sorted(Path(stage_dir).glob("experiment_state-*.json"))
    return found[-1] if found else None


@dataclass(frozen=True)
class RayTrial:
    """One trial as Ray recorded it: its sampled config and each reported result, in order."""

    trial_id: str
    folder: Path
    config: dict[str, Any]
    results: list[dict[str, Any]]


def ray_trials(stage_dir: Path) -> list[RayTrial]:
    """The trials of a stage folder that reported at least one result."""
    found = []
    for folder in sorted(p for p in Path(stage_dir).iterdir() if p.is_dir()):
        lines = (folder / "result.json").read_text().splitlines() if (folder / "result.json").is_file() else []
        results = [json.loads(line) for line in lines if line.strip()]
        if results and (folder / "params.json").is_file():
            found.append(RayTrial(str(results[0]["trial_id"]), folder,
                                  json.loads((folder / "params.json").read_text()), results))
    return found


def best_result(results: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The result with the best finite ``metric`` (the first of equals), or None."""
    best: dict[str, Any] | None = None
    for result in results:
        value = result.get(metric)
        if isinstance(value, int | float) and math.isfinite(value) and (
                best is None or better(value, best[metric], mode)):
            best = result
    return best


def ray_statuses(snapshot: Path) -> dict[str, str]:
    """Ray trial id -> status (PENDING, RUNNING, PAUSED, TERMINATED, ERROR) in a snapshot."""
    raw = json.loads(snapshot.read_text())
    states = (json.loads(entry[0]) for entry in raw["trial_data"])
    return {str(state["trial_id"]): str(state["status"]) for state in states}


def set_ray_statuses(snapshot: Path, statuses: dict[str, str]) -> None:
    """Rewrite the status of some trials of a snapshot (atomically: a kill leaves the old file)."""
    raw = json.loads(snapshot.read_text())
    for entry in raw["trial_data"]:
        state = json.loads(entry[0])
        if str(state["trial_id"]) in statuses:
            state["status"] = statuses[str(state["trial_id"])]
            entry[0] = json.dumps(state, indent=2)
    write_atomic(snapshot, json.dumps(raw))


def reconcile_stage(stage_dir: Path, storage: optuna.storages.BaseStorage, optuna_study: str,
                    tracking_uri: str, experiment_name: str, trial_key_prefix: str, *, metric: str, mode: str,
                    max_epochs: int) -> Reconciled:
    """Bring the three records of one stage into agreement (see the module's docstring).

    ``trial_key_prefix`` is ``<study>/<stage>/``: the MLflow trial runs of this stage; ``metric``,
    ``mode`` and ``max_epochs`` are the stage's, for a trial told its end from Ray's records.
    """
    done = Reconciled()
    snapshot = latest_snapshot(stage_dir)
    if snapshot is None or optuna_study not in optuna.get_all_study_names(storage=storage):
        return done
    ray = ray_statuses(snapshot)
    records = {t.trial_id: t for t in ray_trials(stage_dir)}
    study = optuna.load_study(study_name=optuna_study, storage=storage)
    by_ray: dict[str, optuna.trial.FrozenTrial] = {}
    for trial in study.get_trials(deepcopy=False):
        ray_id = trial.user_attrs.get(USER_ATTR_RAY)
        if ray_id:
            by_ray[str(ray_id)] = trial
        if trial.state != TrialState.RUNNING:
            if ray_id in ray and ray[ray_id] not in RAY_ENDED:
                done.ray_ended[ray_id] = "ERROR" if trial.state == TrialState.FAIL else "TERMINATED"
            continue
        if ray_id in ray and ray[ray_id] not in RAY_ENDED:
            continue  # Ray resumes it from its checkpoint and tells Optuna how it ended
        recorded = records.get(str(ray_id)) if ray_id in ray else None
        if recorded is not None:
            state = _tell_from_records(study, trial, recorded, ray[str(ray_id)], metric, mode, max_epochs)
            done.optuna_told[trial.number] = state.name
            by_ray[str(ray_id)] = study._storage.get_trial(trial._trial_id)  # its end, for its MLflow run
            continue
        reason = LOST_END if ray_id in ray else LOST_BY_KILL
        storage.set_trial_user_attr(trial._trial_id, LOST_ATTR, reason)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        done.optuna_failed.append(trial.number)
    if done.ray_ended:
        set_ray_statuses(snapshot, done.ray_ended)
    done.mlflow_closed = _close_open_runs(tracking_uri, experiment_name, trial_key_prefix, ray,
                                          set(done.ray_ended), by_ray)
    return done


def _tell_from_records(study: optuna.Study, trial: optuna.trial.FrozenTrial, recorded: RayTrial, status: str,
                       metric: str, mode: str, max_epochs: int) -> TrialState:
    """Tell Optuna the end of a trial Ray ended, from its results: the epochs Optuna lacks on its curve,
    the MLflow run id, then the end by the searcher's rules (FAIL for an errored trial or a non-finite
    last value)."""
    live = optuna.Trial(study, trial._trial_id)
    for result in recorded.results:
        value, step = result.get(metric), result.get("training_iteration", result.get("epoch"))
        if isinstance(value, int | float) and math.isfinite(value) and step is not None \
                and int(step) not in trial.intermediate_values:
            report_epoch(live, float(value), int(step))
    best = best_result(recorded.results, metric, mode)
    last: dict[str, Any] = recorded.results[-1]
    if last.get(USER_ATTR_MLFLOW) and USER_ATTR_MLFLOW not in trial.user_attrs:
        live.set_user_attr(USER_ATTR_MLFLOW, last[USER_ATTR_MLFLOW])
    value = last.get(metric)
    finite = status != "ERROR" and isinstance(value, int | float) and math.isfinite(value)
    return tell_end(study, live, float(best[metric]) if finite and best else None, int(last.get("epoch", 0)),
                    max_epochs)


def _close_open_runs(tracking_uri: str, experiment_name: str, prefix: str, ray: dict[str, str],
                     ended_now: set[str], by_ray: dict[str, optuna.trial.FrozenTrial]) -> dict[str, str]:
    """Close the stage's MLflow trial runs left RUNNING whose trial Ray will not resume."""
    client: MlflowClient = client_for(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return {}
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TAG_KIND}` = 'trial' and attributes.status = 'RUNNING' "
                      f"and tags.`{TAG_TRIAL_KEY}` LIKE '{prefix}%'",
        max_results=10_000,
    )
    closed: dict[str, str] = {}
    for run in runs:
        ray_id = run.data.tags.get(TAG_RAY_TRIAL) or run.data.tags[TAG_TRIAL_KEY][len(prefix):]
        if ray_id in ray and ray[ray_id] not in RAY_ENDED and ray_id not in ended_now:
            continue  # resumed by Ray: the trial reopens its run
        closed[run.info.run_id] = _close(client, run.info.run_id, by_ray, ray_id)
    return closed


def _close(client: MlflowClient, run_id: str, by_ray: dict[str, optuna.trial.FrozenTrial], ray_id: str) -> str:
    # ``by_ray`` holds the states read before this pass: a trial it told FAIL still reads RUNNING.
    trial = by_ray.get(ray_id)
    end = OPTUNA_TO_TRIAL_STATE.get(trial.state) if trial is not None else None
    if end is None:
        client.set_tag(run_id, TAG_TRIAL_STATE, "failed")
        client.set_terminated(run_id, status="KILLED")
        return "KILLED"
    status = "FAILED" if end == "failed" else "FINISHED"
    client.set_tag(run_id, TAG_TRIAL_STATE, end)
    client.set_terminated(run_id, status=status)
    return status


def close_open_parents(tracking_uri: str, experiment_name: str) -> list[str]:
    """Mark the sweep's parent runs still RUNNING as KILLED (the driver was interrupted); their ids."""
    client = client_for(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`{TAG_KIND}` = 'parent' and attributes.status = 'RUNNING'")
    for run in runs:
        client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in runs]
