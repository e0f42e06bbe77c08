"""A sweep's stages without Ray: the Optuna storage (opened the one way, whether a study is there),
the first trials to enqueue, and the plain records of what a stage's trials did (``sweep.tuner``
fills them from Ray's results)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from depthcore.stages import FIRST_STAGE, STAGES
from sweep.spec import SweepSpec
from sweep.stores import storage_error
from sweep.tracking.store import first_line

STAGE1_PARAM = "stage1_trial"
"""Stage-2 parameter naming the stage-1 trial whose best checkpoint is fine-tuned."""


USER_ATTR_BEST = "best_value"
"""Optuna user attribute: the trial's best epoch's value (its Optuna value too, unless it was PRUNED)."""
STORAGE_ERRORS = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)
"""What Optuna's RDB storage raises when its database stops answering mid-sweep."""


def storage_failure(err: BaseException) -> str:
    """One line for a database error mid-sweep: Optuna's ``StorageInternalError`` words every failed
    commit as possibly invalid data, so the database driver's own error under it is shown."""
    while isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ is not None:
        err = err.__cause__
    return first_line(err)


def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """The study's database; one that cannot be opened (down, refused, no driver) is a one-line SpecError."""
    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=None)
    except Exception as err:  # SQLAlchemy, the database driver and Optuna raise several types
        raise storage_error(url, err) from None


def stage_sampler(spec: SweepSpec) -> optuna.samplers.TPESampler:
    """The sampler of every stage's study (the sweep's and ``--dry-run``'s, so that a dry run shows
    the configurations the sweep really samples first)."""
    return optuna.samplers.TPESampler(
        seed=spec.study.seed,
        n_startup_trials=spec.study.n_startup_trials,
        # Without a constant liar, concurrent workers ask TPE the same question and get the
        # same answer; with it, running trials count as bad results while they run.
        constant_liar=True,
    )


def study_exists(storage_url: str, name: str) -> bool:
    """Whether study ``name`` is in the storage; a SQLite file that is not there holds none, and is
    not created by asking (the sweep asks before anything is written)."""
    if storage_url.startswith("sqlite:///") and not Path(storage_url[len("sqlite:///"):]).is_file():
        return False
    storage = optuna_storage(storage_url)
    try:
        return name in optuna.get_all_study_names(storage=storage)
    except Exception as err:
        raise storage_error(storage_url, err) from None


def model_first_points(spec: SweepSpec, stage: str,
                       stage1: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The first trials of a stage: one per architecture, so that each is tried at least once.

    TPE spends trials where results are good, and its random start-up trials may miss a model
    altogether. In stage ``nyu`` the points are the choices of a searched ``model/name``; in a
    fine-tuning stage, the best stage-1 checkpoint of each architecture (``stage1``: the rows of
    ``stage1_topk.json`` by Ray trial id, best first). None when ``num_samples`` is smaller than
    the number of architectures.
    """
    points: list[dict[str, Any]]
    if stage1 and STAGES[stage].finetunes:
        best: dict[str, str] = {}
        for trial_id, row in stage1.items():
            best.setdefault(str(row.get("architecture")), trial_id)
        points = [{STAGE1_PARAM: trial_id} for trial_id in best.values()]
    else:
        dist = spec.stage_space(stage).get("model/name") if stage == FIRST_STAGE else None
        if not isinstance(dist, optuna.distributions.CategoricalDistribution):
            return []
        points = [{"model/name": choice} for choice in dist.choices]
    return points if len(points) <= spec.stages[stage].num_samples else []


@dataclass(frozen=True)
class TrialRecord:
    """What one Ray trial of a finished stage did, without Ray types."""

    trial_id: str
    params: dict[str, Any]
    """The sampled parameters (nested by ``/``, as Ray passes them)."""
    error: str | None
    """The first line of the trial's error, if it failed."""
    history: list[dict[str, Any]]
    """One dict of reported values per epoch."""
    checkpoint: str | None
    """The checkpoint of the trial's best epoch by the stage's metric (None without one)."""


@dataclass(frozen=True)
class StageOutcome:
    trials: list[TrialRecord]
    interrupted: bool
    """Tune returned early (Ctrl-C / SIGINT): some trials did not finish; the state is saved."""
    finished: int
    """Trials that ended (completed, stopped early or failed)."""
    storage_error: str | None = None
    """The first line of the Optuna database's error, when it stopped answering during the stage (no
    trial started after it; the running ones finished)."""


def report_epoch(trial: optuna.Trial, value: float, step: int) -> None:
    """An epoch's value on the trial's curve (Optuna keeps the first report of a step)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        trial.report(value, step)


def tell_end(study: optuna.Study, trial: optuna.Trial, best: float | None, epochs: int, max_epochs: int) -> TrialState:
    """Tell Optuna how a trial ended, by the sweep's rules: FAIL without a finite best value; else
    the best epoch's value (what selection ranks by) as user attribute ``USER_ATTR_BEST`` and, when
    the trial ran all ``max_epochs``, COMPLETE with that value, else PRUNED (stopped early; Optuna
    gives a PRUNED trial its last epoch's value)."""
    if best is None or not math.isfinite(best):
        state = TrialState.FAIL
        study.tell(trial, state=state)
        return state
    trial.set_user_attr(USER_ATTR_BEST, float(best))
    state = TrialState.PRUNED if epochs < max_epochs else TrialState.COMPLETE
    study.tell(trial, float(best) if state == TrialState.COMPLETE else None, state=state)
    return state
