"""Log to MLflow what it missed while it was down, from Ray's records of the trials.

A trial whose tracking server stops answering trains on without it (``TrialTracker.offline``),
and the driver goes on too; Ray keeps every epoch's metrics (``result.json`` in the trial's
folder) and the trial's best and latest checkpoints, and Optuna keeps how each trial ended. At
the end of each stage (and so on ``--resume``) the driver replays those records through the
same ``TrialTracker`` a trial uses: the run is created if the trial never had one, the epochs it
lacks are logged at their step, the best epoch's summary metrics and checkpoint are logged, and
the run is closed with Optuna's end. Preview images are not re-made. A trial Ray has not ended
(it will resume) is left to itself.

No Ray here: the records are files; ``sweep.trial`` supplies the run's params, tags and name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from sweep.reconcile import OPTUNA_TO_TRIAL_STATE, RayTrial, best_result, latest_snapshot, ray_statuses, ray_trials
from sweep.tracking import USER_ATTR_RAY, TrialTracker
from sweep.tracking.store import TrackingError, client_for, find_child, first_line
from sweep.tracking.views import BEST_EPOCH
from sweep.trial import TrialContext, trial_key, trial_run

EPOCH = "epoch"


def relog_stage(ctx: TrialContext, stage_dir: Path, storage: optuna.storages.BaseStorage) -> list[str]:
    """Log what MLflow lacks of each ended trial of the stage; returns the trials it logged.

    Raises ``TrackingError`` (one line) while the server still does not answer.
    """
    snapshot = latest_snapshot(stage_dir)
    if snapshot is None:
        return []
    ray_status = ray_statuses(snapshot)
    study = optuna.load_study(study_name=f"{ctx.study_name}-{ctx.stage}", storage=storage)
    ends = {str(t.user_attrs[USER_ATTR_RAY]): OPTUNA_TO_TRIAL_STATE[t.state] for t in study.get_trials(deepcopy=False)
            if USER_ATTR_RAY in t.user_attrs and t.state in OPTUNA_TO_TRIAL_STATE}
    stage = ctx.spec.stages[ctx.stage]
    try:
        client = client_for(ctx.tracking_uri)
    except TrackingError as err:
        raise _unreachable(ctx, err) from None
    logged = []
    for trial in ray_trials(stage_dir):
        end = ends.get(trial.trial_id)
        if end is None or ray_status.get(trial.trial_id) not in ("TERMINATED", "ERROR"):
            continue  # not ended: Ray resumes it, and it logs itself
        try:
            run = find_child(client, ctx.parent_run_id, trial_key(ctx.study_name, ctx.stage, trial.trial_id))
            missing = _missing_epochs(client, run, trial)
        except Exception as err:
            raise _unreachable(ctx, err) from None
        best = best_result(trial.results, stage.metric, stage.mode)
        closed = run is not None and run.info.status != "RUNNING"
        if not missing and closed and (best is None or run.data.metrics.get(BEST_EPOCH) == best[EPOCH]):
            continue
        _replay(ctx, trial, missing, best, end)
        logged.append(trial.trial_id)
    return logged


def _missing_epochs(client: Any, run: Any, trial: RayTrial) -> list[dict[str, Any]]:
    epochs = {int(m.step) for m in client.get_metric_history(run.info.run_id, EPOCH)} if run is not None else set()
    return [r for r in trial.results if EPOCH in r and int(r[EPOCH]) not in epochs]


def _replay(ctx: TrialContext, trial: RayTrial, missing: list[dict[str, Any]], best: dict[str, Any] | None,
            end: str) -> None:
    """The trial's run as the trial would have logged it, from its Ray records."""
    run = trial_run(ctx, trial.config, trial.trial_id, out_dir=str(trial.folder), node=trial.results[-1].get("node_ip"))
    tracker = TrialTracker(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id, run.key)
    try:
        tracker.start(params=run.params, tags=run.tags, run_name=run.name)
    except TrackingError as err:
        raise _unreachable(ctx, err) from None
    if not tracker.resumed:
        tracker.log_config(run.config.to_dict())
    for result in missing:
        tracker.log_epoch(_metrics(result), step=int(result[EPOCH]))
    if best is not None:
        tracker.log_best(_metrics(best), int(best[EPOCH]))
        checkpoint = trial.folder / str(best.get("checkpoint_dir_name") or "")
        if best.get("checkpoint_dir_name") and checkpoint.is_dir():
            tracker.log_best_checkpoint(checkpoint)
    tracker.finish(end)
    if tracker.failures:
        raise _unreachable(ctx, RuntimeError(f"{tracker.failures} MLflow call(s) for trial {trial.trial_id} failed"))


def _metrics(result: dict[str, Any]) -> dict[str, Any]:
    """A Ray result's own metrics: what the trial reported, without Ray's bookkeeping."""
    return {k: v for k, v in result.items() if k == EPOCH or "/" in k or k == "lr"}


def _unreachable(ctx: TrialContext, err: BaseException) -> TrackingError:
    return TrackingError(f"MLflow tracking URI {ctx.tracking_uri}: cannot log stage {ctx.stage}'s trials from "
                         f"Ray's records ({first_line(err)}); they are kept in the sweep folder")
