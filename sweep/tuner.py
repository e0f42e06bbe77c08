"""Ray Tune for one sweep stage: Optuna TPE under a concurrency limit, ASHA early stopping.

Ray's ``OptunaSearch`` tells Optuna that every trial that ended without an error
COMPLETED — including ASHA-stopped ones — and leaves a trial that reported NaN
RUNNING. ``TrueStateOptunaSearch`` records what happened: COMPLETE only when the
trial ran all its epochs, PRUNED (with its last value) when the scheduler stopped
it, FAIL for errors and non-finite metrics.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune import CheckpointConfig, RunConfig
from ray.tune.experiment import Trial
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from depthcore.config import flatten
from sweep.space import SweepSpec
from sweep.tracking import finish_trial_run
from sweep.trainable import STAGE1_PARAM, TrialContext, run_trial, trial_key

log = logging.getLogger(__name__)


class TrueStateOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that records early-stopped trials as PRUNED and NaN/errors as FAIL."""

    def __init__(self, *args: Any, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        # Optuna refuses NaN intermediate values in some samplers' bookkeeping: skip them and
        # let on_trial_complete mark the trial FAIL.
        if value is not None and math.isfinite(value):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
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
            study.tell(ot_trial, value, state=TrialState.COMPLETE)
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
    dist = spec.stage_space(stage).get("model/name") if stage == "nyu" else None
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
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    return tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, ctx=ctx), resources),
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
