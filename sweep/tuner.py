"""All of Ray for the sweep's driver: the runtime, one Tuner per stage (Optuna TPE under a
concurrency limit, ASHA early stopping), restore, and plain records of what the trials did.

``sweep.trial`` is the only other module that imports Ray (the trial's reporting API).

Ray's ``OptunaSearch`` tells Optuna that every trial that ended without an error
COMPLETED — including ASHA-stopped ones — and leaves a trial that reported NaN
RUNNING. ``TrueStateOptunaSearch`` records what happened: COMPLETE only when the
trial ran all its epochs, PRUNED (with its last value) when the scheduler stopped
it, FAIL for errors and non-finite metrics. The value told is the trial's best epoch's
(what selection uses), and each Optuna trial carries the Ray trial id and MLflow run id
as user attributes. ``OptunaSearch`` offers no public hook for the trial objects, so this
is the one module that reads its private ``_ot_trials``, ``_ot_study`` and
``_completed_trials`` (``tests/sweep/test_tuner_upstream.py`` fails when they change).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune import CheckpointConfig, RunConfig
from ray.tune.experiment import Trial
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from depthcore.config import flatten
from depthcore.stages import FIRST_STAGE, better
from sweep.spec import SweepSpec
from sweep.tracking import USER_ATTR_MLFLOW, USER_ATTR_RAY, finish_trial_run
from sweep.trial import OPTUNA_TRIAL_KEY, STAGE1_PARAM, TrialContext, run_trial, trial_key

log = logging.getLogger(__name__)




class TrueStateOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that records early-stopped trials as PRUNED and NaN/errors as FAIL, tells
    the best epoch's value, and links each Optuna trial to its Ray trial and MLflow run."""

    def __init__(self, *args: Any, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self._best: dict[str, float] = {}

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if isinstance(config, dict) and ot_trial is not None:
            ot_trial.set_user_attr(USER_ATTR_RAY, trial_id)
            config = {**config, OPTUNA_TRIAL_KEY: ot_trial.number}
        return config

    def _link(self, trial_id: str, result: dict | None) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        run_id = (result or {}).get(USER_ATTR_MLFLOW)
        if ot_trial is not None and run_id and USER_ATTR_MLFLOW not in ot_trial.user_attrs:
            ot_trial.set_user_attr(USER_ATTR_MLFLOW, run_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._link(trial_id, result)
        value = result.get(self.metric)
        # Optuna refuses NaN intermediate values in some samplers' bookkeeping: skip them and
        # let on_trial_complete mark the trial FAIL.
        if value is not None and math.isfinite(value):
            if better(value, self._best.get(trial_id, math.nan), self.mode):
                self._best[trial_id] = float(value)
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        self._link(trial_id, result)
        ot_trial = self._ot_trials[trial_id]
        study = self._ot_study
        assert study is not None  # set up by OptunaSearch before any trial exists
        value = (result or {}).get(self.metric)
        epochs = int((result or {}).get("epoch", 0))
        if error or value is None or not math.isfinite(value):
            study.tell(ot_trial, state=TrialState.FAIL)
        elif epochs < self._max_epochs:
            # Optuna fills a pruned trial's value from its last intermediate value, but Ray passes
            # the result that made ASHA stop the trial only here, not to on_trial_result.
            step = int(result[TRAINING_ITERATION]) if result and TRAINING_ITERATION in result else epochs
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # Optuna keeps the first report of a step
                ot_trial.report(value, step)
            study.tell(ot_trial, state=TrialState.PRUNED)
        else:
            # Selection ranks a trial by its best epoch: Optuna's value is that one too.
            study.tell(ot_trial, self._best.get(trial_id, value), state=TrialState.COMPLETE)
        self._completed_trials.add(trial_id)


class TrialStateCallback(tune.Callback):
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

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        params = ", ".join(f"{k}={_short(v)}" for k, v in flatten(trial.config).items())
        print(f"[{self.ctx.stage}] trial {trial.trial_id} started: {params}", flush=True)

    def _finish(self, trial: Trial, state: str, trials: list[Trial]) -> None:
        self.states[trial.trial_id] = state
        # No run to close when the trial failed before it started one.
        finish_trial_run(self.ctx.tracking_uri, self.ctx.parent_run_id,
                         trial_key(self.ctx.study_name, self.ctx.stage, trial.trial_id), state)
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


def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(url, heartbeat_interval=None)


def study_exists(storage_url: str, name: str) -> bool:
    return name in optuna.get_all_study_names(storage=optuna_storage(storage_url))


def model_first_points(spec: SweepSpec, stage: str) -> list[dict[str, Any]]:
    """One first trial per choice of a searched ``model/name`` in stage ``nyu`` (else none).

    TPE spends trials where results are good, and its random start-up trials may miss a model
    altogether; enqueueing one trial per model makes sure each architecture is tried at least
    once before TPE takes over. Needs ``num_samples`` of at least the number of choices.
    """
    dist = spec.stage_space(stage).get("model/name") if stage == FIRST_STAGE else None
    if not isinstance(dist, optuna.distributions.CategoricalDistribution):
        return []
    if len(dist.choices) > spec.stages[stage].num_samples:
        return []
    return [{"model/name": choice} for choice in dist.choices]


def build_tuner(
    ctx: TrialContext,
    *,
    storage_url: str,
    optuna_study: str,
    ray_dir: Path,
    num_samples: int,
    max_epochs: int,
    stage1_choices: list[str] | None = None,
    trainable: Callable[[dict[str, Any], TrialContext], None] = run_trial,
    first_points: list[dict[str, Any]] | None = None,
) -> tune.Tuner:
    """A ``Tuner`` for one stage of the sweep (not yet started).

    ``trainable(config, ctx)`` runs one trial; the default trains with depthcore. Another
    function (e.g. the overhead benchmark's sleeping trial) gets everything else unchanged.
    ``first_points`` (partial parameter dicts, e.g. ``{"model/name": "unetpp_3m"}``) are enqueued
    in the Optuna study and run first; TPE samples their other parameters.
    """
    spec, stage = ctx.spec, ctx.stage
    stage_spec = spec.stages[stage]
    # Stage 2 also chooses which top-k stage-1 checkpoint a trial fine-tunes.
    extra = {STAGE1_PARAM: optuna.distributions.CategoricalDistribution(stage1_choices)} if stage1_choices else None
    define_by_run = spec.sampler(stage, extra_space=extra)

    sampler = optuna.samplers.TPESampler(
        seed=spec.study.seed,
        n_startup_trials=spec.study.n_startup_trials,
        # Without a constant liar, concurrent workers ask TPE the same question and get the
        # same answer; with it, running trials count as bad results while they run.
        constant_liar=True,
    )
    searcher = TrueStateOptunaSearch(
        space=define_by_run, metric=stage_spec.metric, mode=stage_spec.mode, sampler=sampler,
        study_name=optuna_study, storage=optuna_storage(storage_url), max_epochs=max_epochs,
        points_to_evaluate=first_points or None,
    )
    scheduler: TrialScheduler
    if spec.scheduler.type == "asha":
        scheduler = ASHAScheduler(
            time_attr="epoch", max_t=max_epochs, grace_period=min(spec.scheduler.grace_period, max_epochs),
            reduction_factor=spec.scheduler.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        _trainable(ctx, trainable),
        tune_config=tune.TuneConfig(
            metric=stage_spec.metric,
            mode=stage_spec.mode,
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=spec.study.max_concurrent),
            scheduler=scheduler,
            num_samples=num_samples,
            time_budget_s=spec.study.time_budget_s,
            # Short trials are dominated by actor start-up without reuse.
            reuse_actors=True,
        ),
        run_config=RunConfig(
            name=stage,
            storage_path=str(ray_dir.resolve()),
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=stage_spec.metric, checkpoint_score_order=stage_spec.mode,
            ),
            callbacks=[TrialStateCallback(ctx, max_epochs, num_samples)],
            # Our callback prints one line per trial start and end; Ray's tables are noise here.
            verbose=0,
        ),
    )


def _trainable(ctx: TrialContext, trainable: Callable[[dict[str, Any], TrialContext], None] = run_trial) -> Any:
    """The stage's trainable with its context and resources: one recipe for a new and a restored Tuner."""
    resources = {"cpu": ctx.spec.resources.cpu, "gpu": ctx.spec.resources.gpu}
    return tune.with_resources(tune.with_parameters(trainable, ctx=ctx), resources)


# -- the runtime and one stage, as plain records ------------------------------------------------


@contextmanager
def ray_runtime(address: str | None) -> Iterator[None]:
    """Connect to the cluster at ``address``, or start a local runtime (stopped on exit)."""
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False)
    try:
        yield
    finally:
        if not address:
            ray.shutdown()


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


def run_stage(ctx: TrialContext, ray_dir: Path, *, storage_url: str, resume: bool,
              stage1_choices: list[str] | None = None,
              trainable: Callable[[dict[str, Any], TrialContext], None] = run_trial) -> StageOutcome:
    """Run (or, with ``resume``, continue) one stage; returns what its trials did."""
    spec, stage = ctx.spec, ctx.stage
    own = spec.stages[stage]
    path = ray_dir / stage
    if resume and tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path.resolve()), trainable=_trainable(ctx, trainable),
                                   resume_unfinished=True, resume_errored=True, restart_errored=False)
    else:
        # Not on resume: a resumed study already holds the enqueued trials.
        tuner = build_tuner(ctx, storage_url=storage_url, optuna_study=f"{ctx.study_name}-{stage}", ray_dir=ray_dir,
                            num_samples=own.num_samples, max_epochs=spec.max_epochs(stage),
                            stage1_choices=stage1_choices, trainable=trainable,
                            first_points=None if resume else model_first_points(spec, stage))
    results = tuner.fit()
    records = []
    for result in results:  # type: ignore[attr-defined]  # ResultGrid iterates via __getitem__/__len__
        df = result.metrics_dataframe
        history = df.to_dict("records") if df is not None else []
        checkpoint = result.get_best_checkpoint(own.metric, own.mode) if history else None
        error = str(result.error).strip().splitlines()[0] if result.error else None
        records.append(TrialRecord(trial_id=str(result.metrics.get("trial_id") or result.path.split("/")[-1]),
                                   params=dict(result.config or {}), error=error, history=history,
                                   checkpoint=checkpoint.path if checkpoint else None))
    unfinished = len(results) - results.num_terminated - results.num_errors
    interrupted = unfinished > 0 or (spec.study.time_budget_s is None and len(results) < own.num_samples)
    return StageOutcome(records, interrupted, results.num_terminated + results.num_errors)
