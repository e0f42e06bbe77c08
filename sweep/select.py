"""The only selection of winners and top-k trials of a sweep, from MLflow alone.

The end-of-sweep table, the stage-2 top-k, the export, the report and the seed comparison all
use ``Study.winners`` / ``Study.top_k``, so they always name the same trials.

Selection uses the stage's validation metric only (its default from ``depthcore.stages``, or
whatever the spec chose; the parent run's ``depthsweep.metric``/``.mode`` tags say which): a
trial's score is the best value in its per-epoch history, the epoch whose checkpoint the trial
logged. Test metrics, which ``sweep.export`` logs to the winners later, are never looked at
here. A trial is a candidate when its run ended (not left RUNNING by a killed driver, nor
KILLED), it did not fail and it logged a finite value (``eligible``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.entities import Run

from depthcore.stages import FIRST_STAGE, STAGE_NAMES, STAGES, better, mode_of
from sweep.tracking import (
    TAG_ARCHITECTURE,
    TAG_KIND,
    TAG_METRIC,
    TAG_MODE,
    TAG_OPTUNA_TRIAL,
    TAG_PARENT,
    TAG_STAGE_PARENT,
    TAG_TRIAL_KEY,
    TAG_TRIAL_STATE,
)


class SelectionError(RuntimeError):
    """The study, its stages or its trials are not there (one-line message)."""


@dataclass(frozen=True)
class TrialRun:
    """One trial's child run with its selection score."""

    run_id: str
    stage: str
    architecture: str
    trial_key: str
    state: str
    metric: str
    mode: str
    value: float
    """Best validation value over the trial's epochs (nan when it logged none)."""
    epoch: int
    """Epoch (MLflow step) of that value; its checkpoint is the run's ``checkpoint/`` artifact."""
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    """Latest value of every metric of the run (``val/*`` at the last epoch, ``test/*`` once exported)."""
    status: str = "FINISHED"
    """The MLflow run's status: a trial still training, or cut short, is RUNNING or KILLED."""

    @property
    def eligible(self) -> bool:
        """A candidate for selection: ended, not failed, and a finite validation value."""
        return self.status == "FINISHED" and self.state != "failed" and math.isfinite(self.value)

    def better_than(self, other: TrialRun | None) -> bool:
        return other is None or better(self.value, other.value, self.mode)


@dataclass
class Study:
    """The MLflow side of one sweep: experiment, parent run per stage, trial runs per stage."""

    name: str
    experiment_id: str
    parents: dict[str, Run]
    trials: dict[str, list[TrialRun]]

    def ranked(self, stage: str) -> list[TrialRun]:
        """The stage's eligible trials, best first. Ties go to the trial Optuna sampled first (its
        trial number follows the seeded sampler, not the timing of parallel trials or Ray's random
        trial ids), so reruns of a sweep select the same winners."""
        runs = sorted((r for r in self.trials.get(stage, []) if r.eligible), key=_sampling_order)
        return sorted(runs, key=lambda r: r.value, reverse=bool(runs) and runs[0].mode == "max")

    def winners(self) -> dict[str, dict[str, TrialRun]]:
        """``{stage: {architecture: best TrialRun}}`` by validation metric; ineligible trials excluded."""
        result: dict[str, dict[str, TrialRun]] = {}
        for stage in sorted(self.trials, key=_stage_order):
            best: dict[str, TrialRun] = {}
            for run in self.ranked(stage):
                best.setdefault(run.architecture, run)
            if best:
                result[stage] = dict(sorted(best.items()))
        return result

    def top_k(self, stage: str, k: int, per_architecture: bool) -> list[TrialRun]:
        """The ``k`` best eligible trials of ``stage``, per architecture or overall, best first."""
        ranked = self.ranked(stage)
        if not per_architecture:
            return ranked[:k]
        taken: dict[str, int] = {}
        chosen = []
        for run in ranked:
            if taken.get(run.architecture, 0) < k:
                taken[run.architecture] = taken.get(run.architecture, 0) + 1
                chosen.append(run)
        return chosen


def load_study(tracking_uri: str, study: str) -> Study:
    """Read a sweep's parent and child runs from the MLflow store at ``tracking_uri``."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        raise SelectionError(f"MLflow {tracking_uri}: no experiment named {study!r}; "
                             f"studies there: {', '.join(names) or 'none'}")
    parents: dict[str, Run] = {}
    for run in _search(client, experiment.experiment_id, f"tags.`{TAG_KIND}` = 'parent'"):
        parents.setdefault(run.data.tags.get(TAG_STAGE_PARENT, "?"), run)  # newest first
    if not parents:
        raise SelectionError(f"MLflow {tracking_uri}: experiment {study!r} has no sweep stage (no parent run)")
    stage_of = {run.info.run_id: stage for stage, run in parents.items()}
    trials: dict[str, list[TrialRun]] = {stage: [] for stage in parents}
    for run in _search(client, experiment.experiment_id, f"tags.`{TAG_KIND}` = 'trial'"):
        stage = stage_of.get(run.data.tags.get(TAG_PARENT, ""))
        if stage is None:
            continue  # a trial of an older parent run of the same stage
        metric, mode = _selection(parents[stage], stage)
        value, epoch = best_in_history(client, run.info.run_id, metric, mode)
        trials[stage].append(TrialRun(
            run_id=run.info.run_id, stage=stage, architecture=run.data.tags.get(TAG_ARCHITECTURE, "?"),
            trial_key=run.data.tags.get(TAG_TRIAL_KEY, run.info.run_id), state=run.data.tags.get(TAG_TRIAL_STATE, "?"),
            metric=metric, mode=mode, value=value, epoch=epoch, params=dict(run.data.params),
            tags=dict(run.data.tags), metrics=dict(run.data.metrics), status=run.info.status,
        ))
    return Study(name=study, experiment_id=experiment.experiment_id, parents=parents, trials=trials)


def best_in_history(client: MlflowClient, run_id: str, metric: str, mode: str) -> tuple[float, int]:
    """``(best value, its step)`` of ``metric`` in a run's history; ``(nan, -1)`` without finite values."""
    history = client.get_metric_history(run_id, metric)
    points = [(m.value, m.step) for m in history if math.isfinite(m.value)]
    if not points:
        return math.nan, -1
    value, step = min(points) if mode == "min" else max(points, key=lambda p: (p[0], -p[1]))
    return float(value), int(step)


def value_at(client: MlflowClient, run_id: str, metric: str, step: int) -> float:
    """``metric`` of a run at ``step`` (the latest logged at that step), or nan when it has none."""
    at_step = sorted((m.timestamp, m.value) for m in client.get_metric_history(run_id, metric) if m.step == step)
    return float(at_step[-1][1]) if at_step else math.nan


def _sampling_order(run: TrialRun) -> tuple[int, str]:
    number = run.tags.get(TAG_OPTUNA_TRIAL, "")
    return (int(number) if number.isdigit() else 1 << 30, run.trial_key)


def _stage_order(stage: str) -> tuple[int, str]:
    return (STAGE_NAMES.index(stage) if stage in STAGE_NAMES else len(STAGE_NAMES), stage)


def _selection(parent: Run, stage: str) -> tuple[str, str]:
    default = STAGES[stage].default_metric if stage in STAGES else STAGES[FIRST_STAGE].default_metric
    metric = parent.data.tags.get(TAG_METRIC, default)
    return metric, parent.data.tags.get(TAG_MODE, mode_of(metric))


def _search(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs
