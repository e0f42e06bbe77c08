"""All of Ray for the sweep's driver: the runtime, one Tuner per stage (Optuna TPE under a
concurrency limit, ASHA early stopping), restore after an unclean stop, and ``sweep.study``'s plain
records of what the trials did. ``sweep.trial`` is the only other module that imports Ray.

Ray's ``OptunaSearch`` tells Optuna that every trial that ended without an error COMPLETED —
ASHA-stopped ones too — and leaves a trial that reported NaN RUNNING. ``TrueStateOptunaSearch``
records COMPLETE only when the trial ran all its epochs, PRUNED (with its last value) when the
scheduler stopped it, FAIL for errors and non-finite metrics; the value told is the best epoch's
(what selection uses), and each Optuna trial carries the Ray trial id and MLflow run id as user
attributes. ``OptunaSearch`` offers no public hook for the trial objects, so this module reads
its private ``_ot_trials``, ``_ot_study`` and ``_completed_trials``
(``tests/sweep/test_tuner_upstream.py`` fails when they change).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune import CheckpointConfig, FailureConfig, RunConfig
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, SearchGenerator
from ray.tune.search.optuna import OptunaSearch
from ray.tune.utils.serialization import TuneFunctionEncoder, _loads_with_cloudpickle

from depthcore.errors import one_line
from depthcore.stages import better
from sweep.reconcile import latest_snapshot, reconcile_stage
from sweep.record import write_atomic
from sweep.study import (
    STORAGE_ERRORS,
    StageOutcome,
    TrialRecord,
    model_first_points,
    optuna_storage,
    report_epoch,
    stage_sampler,
    storage_failure,
    tell_end,
)
from sweep.tracking import USER_ATTR_MLFLOW, USER_ATTR_RAY
from sweep.trial import OPTUNA_TRIAL_KEY, STAGE1_PARAM, TrialContext, TrialStateCallback, run_trial, trial_key

log = logging.getLogger(__name__)

MAX_FAILURES = 2
"""Retries of a trial whose worker crashed or whose node was lost, each from its last checkpoint."""
STORAGE_LOST: dict[str, str] = {}
"""Optuna study name -> the first line of its database's error, once it stopped answering; kept
outside the searcher, which Ray pickles into its snapshots (a restored one would inherit it)."""


class TrueStateOptunaSearch(OptunaSearch):
    """Early-stopped trials PRUNED, NaN/errors FAIL, the best epoch's value told; links the records."""

    def __init__(self, *args: Any, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self._best: dict[str, float] = {}

    def _setup_study(self, mode: str | list) -> None:
        super()._setup_study(mode)
        # optuna-dashboard and Optuna's plots label the value with this name, not "Objective 0".
        if self._ot_study is not None and isinstance(self._metric, str):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._ot_study.set_metric_names([self._metric])

    def _storage_lost(self, err: Exception) -> None:
        """The study's database stopped answering: no new trial; the running ones finish (Ray keeps their
        results) and ``sweep.reconcile`` tells Optuna their ends on ``--resume``."""
        if self._study_name not in STORAGE_LOST:
            STORAGE_LOST[self._study_name] = storage_failure(err)
            print(f"Optuna study {self._study_name}: its database stopped answering ({STORAGE_LOST[self._study_name]}); "
                  f"no new trial starts, the running ones finish", flush=True)

    def suggest(self, trial_id: str) -> dict | None:  # or Ray's FINISHED, which its annotation omits
        if self._study_name in STORAGE_LOST:
            return self.FINISHED  # type: ignore[return-value]
        try:
            config = super().suggest(trial_id)
            ot_trial = self._ot_trials.get(trial_id)
            if isinstance(config, dict) and ot_trial is not None:
                ot_trial.set_user_attr(USER_ATTR_RAY, trial_id)
                config = {**config, OPTUNA_TRIAL_KEY: ot_trial.number}
        except STORAGE_ERRORS as err:
            self._storage_lost(err)
            return self.FINISHED  # type: ignore[return-value]
        return config

    def _link(self, trial_id: str, result: dict | None) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        run_id = (result or {}).get(USER_ATTR_MLFLOW)
        if ot_trial is not None and run_id and USER_ATTR_MLFLOW not in ot_trial.user_attrs:
            ot_trial.set_user_attr(USER_ATTR_MLFLOW, run_id)

    def ended(self, trial_id: str) -> bool:
        """Optuna holds the trial as finished (read from the storage, not from this object's memory);
        while the storage does not answer, taken as ended (nothing more is told)."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or self._ot_study is None or self._study_name in STORAGE_LOST:
            return True
        try:
            return self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()
        except STORAGE_ERRORS as err:
            self._storage_lost(err)
            return True

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.ended(trial_id):
            return  # told already (before a kill of the driver): Optuna refuses a second report
        value = result.get(self.metric)
        try:
            self._link(trial_id, result)
            # Optuna refuses NaN intermediate values in some samplers' bookkeeping: skip them and
            # let on_trial_complete mark the trial FAIL.
            if value is not None and math.isfinite(value):
                if better(value, self._best.get(trial_id, math.nan), self.mode):
                    self._best[trial_id] = float(value)
                super().on_trial_result(trial_id, result)
        except STORAGE_ERRORS as err:
            self._storage_lost(err)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        self._completed_trials.add(trial_id)
        if self.ended(trial_id):
            return
        assert self._ot_study is not None  # set up by OptunaSearch before any trial exists
        value = (result or {}).get(self.metric)
        finite = not error and value is not None and math.isfinite(value)  # a NaN last epoch fails the trial
        try:
            self._link(trial_id, result)
            if finite:
                # Ray passes the last result (the one that made ASHA stop the trial, or a finished
                # trial's last) only here, not to on_trial_result: it becomes the last intermediate
                # value, so every epoch is on the trial's curve.
                step = (result or {}).get(TRAINING_ITERATION, (result or {}).get("epoch", 0))
                report_epoch(self._ot_trials[trial_id], value, int(step))
                if better(value, self._best.get(trial_id, math.nan), self.mode):
                    self._best[trial_id] = float(value)
            tell_end(self._ot_study, self._ot_trials[trial_id], self._best.get(trial_id) if finite else None,
                     int((result or {}).get("epoch", 0)), self._max_epochs)
        except STORAGE_ERRORS as err:
            self._storage_lost(err)


class TrueStateLimiter(ConcurrencyLimiter):
    """Counts in flight only trials Optuna holds unfinished: a restored limiter would otherwise keep
    a slot forever for a trial that ended after Ray's last snapshot (``sweep.reconcile``)."""

    def suggest(self, trial_id: str) -> dict | None:
        searcher = self.searcher
        if isinstance(searcher, TrueStateOptunaSearch):
            self.live_trials = {t for t in self.live_trials if not searcher.ended(t)}
        return super().suggest(trial_id)


class ResumableSearchGenerator(SearchGenerator):
    """Ray's wrapper of a searcher, which saves whether the searcher said FINISHED. Ours says it only
    when the study's database stopped answering, so a resumed stage samples again (it still ends
    after ``num_samples``)."""

    def set_state(self, state: dict) -> None:
        super().set_state({**state, "finished": False})


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

    sampler = stage_sampler(spec)
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
            search_alg=ResumableSearchGenerator(TrueStateLimiter(searcher, max_concurrent=spec.study.max_concurrent)),
            scheduler=scheduler,
            num_samples=num_samples,
            time_budget_s=spec.study.time_budget_s,
            # Short trials are dominated by actor start-up without reuse.
            reuse_actors=True,
        ),
        run_config=RunConfig(
            name=stage,
            storage_path=str(ray_dir.resolve()),
            # The best checkpoint by the stage's metric and the latest (Ray keeps it: what a resume continues
            # from); num_to_keep=1 snapshots the experiment at each checkpoint, ray_runtime mutes the warning.
            checkpoint_config=CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=stage_spec.metric, checkpoint_score_order=stage_spec.mode,
            ),
            callbacks=[TrialStateCallback(ctx, max_epochs, num_samples)],
            # A crashed worker or a lost node: retried from the last checkpoint, a bounded number of times.
            failure_config=FailureConfig(max_failures=MAX_FAILURES),
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
    """Connect to the cluster at ``address``, or start a local runtime of its own (stopped on exit),
    not joining one that `ray start` left on this machine (``ray.init()`` would)."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # see RunConfig
    if address:
        ray.init(address=address)
    else:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False)
    try:
        yield
    finally:
        if not address:
            ray.shutdown()


def cluster_nodes() -> list[dict[str, float | str]]:
    """The alive nodes of the connected cluster, each ``{"ip", "cpu", "gpu"}`` (for ``sweep.preflight``)."""
    return [{"ip": n["NodeManagerAddress"], "cpu": n["Resources"].get("CPU", 0), "gpu": n["Resources"].get("GPU", 0)}
            for n in ray.nodes() if n.get("Alive")]


def run_stage(ctx: TrialContext, ray_dir: Path, *, storage_url: str, resume: bool,
              stage1_choices: list[str] | None = None,
              trainable: Callable[[dict[str, Any], TrialContext], None] = run_trial) -> StageOutcome:
    """Run (or, with ``resume``, continue) one stage; returns what its trials did."""
    spec, stage = ctx.spec, ctx.stage
    own = spec.stages[stage]
    path = ray_dir / stage
    if resume and tune.Tuner.can_restore(str(path)):
        reconciled = reconcile_stage(path, optuna_storage(storage_url), f"{ctx.study_name}-{stage}", ctx.tracking_uri,
                                     ctx.study_name, trial_key(ctx.study_name, stage, ""), metric=own.metric,
                                     mode=own.mode, max_epochs=spec.max_epochs(stage))
        if reconciled:
            print(f"[{stage}] reconciled after an unclean stop: {reconciled.describe()}", flush=True)
        _restorable(path)  # errored trials stay failed below: rerunning one would contradict Optuna's FAIL
        tuner = tune.Tuner.restore(str(path.resolve()), trainable=_trainable(ctx, trainable),
                                   resume_unfinished=True, resume_errored=False, restart_errored=False)
    else:
        # Not on resume: a resumed study already holds the enqueued trials.
        tuner = build_tuner(ctx, storage_url=storage_url, optuna_study=f"{ctx.study_name}-{stage}", ray_dir=ray_dir,
                            num_samples=own.num_samples, max_epochs=spec.max_epochs(stage),
                            stage1_choices=stage1_choices, trainable=trainable,
                            first_points=None if resume else model_first_points(spec, stage, ctx.stage1))
    STORAGE_LOST.pop(f"{ctx.study_name}-{stage}", None)
    results, sigint = _fit_watching_sigint(tuner)
    records = []
    for result in results:  # type: ignore[attr-defined]  # ResultGrid iterates via __getitem__/__len__
        df = result.metrics_dataframe
        history = df.to_dict("records") if df is not None else []
        checkpoint = _best_checkpoint(result, own.metric, own.mode) if history else None
        # Ray wraps a trial's exception (RayTaskError); its ``cause`` is what the trial raised.
        error = one_line(getattr(result.error, "cause", None) or result.error) if result.error else None
        records.append(TrialRecord(trial_id=str(result.metrics.get("trial_id") or result.path.split("/")[-1]),
                                   params=dict(result.config or {}), error=error, history=history,
                                   checkpoint=checkpoint))
    unfinished = len(results) - results.num_terminated - results.num_errors
    interrupted = sigint or unfinished > 0 or (spec.study.time_budget_s is None and len(results) < own.num_samples)
    return StageOutcome(records, interrupted, results.num_terminated + results.num_errors,
                        storage_error=STORAGE_LOST.pop(f"{ctx.study_name}-{stage}", None))


def _best_checkpoint(result: Any, metric: str, mode: str) -> str | None:
    """The best checkpoint by ``metric`` that exists: Ray's list less any rotated away after its last
    snapshot (a trial ended by ``sweep.reconcile``); else the newest on disk."""
    scored = [(float(m[metric]), c.path) for c, m in result.best_checkpoints or []  # reported flat: val/rmse
              if Path(c.path).is_dir() and isinstance(m.get(metric), (int, float)) and math.isfinite(m[metric])]
    if scored:
        return (min(scored) if mode == "min" else max(scored))[1]
    on_disk = sorted(Path(result.path).glob("checkpoint_*"))
    return str(on_disk[-1]) if on_disk else None


def _fit_watching_sigint(tuner: tune.Tuner) -> tuple[Any, bool]:
    """``tuner.fit()``, and whether a SIGINT stopped it: Tune swaps in its own handler for the run
    and puts back the one it found on the first SIGINT, so finding ours back means Tune saw one
    (the results alone cannot tell when only pending trials were left)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # ours: KeyboardInterrupt
    try:
        results = tuner.fit()
        return results, signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def _restorable(stage_dir: Path) -> list[str]:
    """Point each unfinished trial of Ray's snapshot at a checkpoint that still exists: the snapshot
    lags, and rotation (``num_to_keep``) may have deleted the latest one it names before a kill.
    Such a trial resumes from its newest checkpoint left (from scratch if none). Returns their ids."""
    snapshot = latest_snapshot(stage_dir)
    if snapshot is None:
        return []
    raw = json.loads(snapshot.read_text())
    changed = []
    for entry in raw["trial_data"]:
        meta = _loads_with_cloudpickle(entry[1])
        manager = meta.get("checkpoint_manager")
        latest = getattr(manager, "_latest_checkpoint_result", None)
        if json.loads(entry[0])["status"] in ("TERMINATED", "ERROR") or latest is None or Path(latest.checkpoint.path).is_dir():
            continue
        kept = [r for r in manager._checkpoint_results if Path(r.checkpoint.path).is_dir()]
        manager._checkpoint_results = kept
        manager._latest_checkpoint_result = max(kept, key=lambda r: r.checkpoint.path) if kept else None
        entry[1] = json.dumps(meta, indent=2, cls=TuneFunctionEncoder)
        changed.append(json.loads(entry[0])["trial_id"])
    if changed:
        write_atomic(snapshot, json.dumps(raw))
    return changed
