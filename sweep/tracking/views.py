"""How a sweep reads in MLflow's UI: run names, best-epoch summary metrics, the experiment's note.

The runs table shows a metric's *latest* value, while selection ranks a trial by its *best*
epoch; so each trial also logs the validation metrics of its best epoch so far as
``best/<metric>`` (``best/val_rmse``), which is what a user sorts by. Their names hold no
second ``/`` so the UI's column chooser lists them under one ``best`` group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NOTE_TAG = "mlflow.note.content"
"""The experiment tag MLflow's UI shows as the experiment's description."""
BEST_PREFIX = "best/"
BEST_EPOCH = "best/epoch"
PREVIEW_KEY = "preview_val"
"""``log_image`` key of the validation preview: one image per improving epoch, shown by the
run page's and the compare view's image charts (with a step slider)."""
PREVIEW_FILE = "preview_val_best.png"
"""The latest preview, also at the run's artifact root under one name for every run, so the
compare view's artifact tab shows the runs' previews side by side."""


def trial_run_name(architecture: str, stage: str, number: int | str) -> str:
    """``unetpp-nyu-3``: what the runs table and the charts' legends show for a trial."""
    return f"{architecture}-{stage}-{number}"


def trial_number(optuna_number: Any, ray_trial_id: str) -> str:
    """The Optuna trial number (what optuna-dashboard shows), else the index in the Ray id
    (``3a7c1_00004`` -> ``4``), else the whole Ray id."""
    if optuna_number is not None and str(optuna_number).isdigit():
        return str(int(optuna_number))
    tail = ray_trial_id.rsplit("_", 1)[-1]
    return str(int(tail)) if tail.isdigit() else ray_trial_id


def parent_run_name(study: str, stage: str) -> str:
    """``nyu stage · quickstart-20261202-1530``: the stage first, so a cut-off name still says it."""
    return f"{stage} stage · {study}"


def best_metric_name(metric: str) -> str:
    """``val/rmse`` -> ``best/val_rmse``."""
    return BEST_PREFIX + metric.replace("/", "_")


def best_epoch_metrics(metrics: Mapping[str, Any], epoch: int) -> dict[str, float]:
    """The ``val/*`` numbers of an epoch as ``best/*`` summary metrics, with ``best/epoch``."""
    best = {best_metric_name(k): float(v) for k, v in metrics.items()
            if k.startswith("val/") and isinstance(v, int | float) and not isinstance(v, bool)}
    best[BEST_EPOCH] = float(epoch)
    return best


def experiment_note(study: str, selections: Mapping[str, tuple[str, str]]) -> str:
    """The experiment's description (Markdown): how to compare architectures in the UI.

    ``selections``: stage -> (selection metric, mode).
    """
    rows = "\n".join(
        f"| `{stage}` | `{metric}` ({'lower' if mode == 'min' else 'higher'} is better) | `{best_metric_name(metric)}` |"
        for stage, (metric, mode) in selections.items())
    return f"""\
**depthsweep study `{study}`**: one parent run per stage, one child run per trial, named
`<architecture>-<stage>-<trial number>` (the Optuna trial number).

**Compare architectures**
1. Table view: *Group by* → *Tags* → `architecture` (add `stage` to split the stages).
2. *Columns*: add the metrics `best/*` below and the tags `architecture`, `encoder`, `parameter_count`;
   sort by the stage's summary metric.
3. Chart view: the charts plot the runs selected in the table; with the grouping on, one line per
   architecture. Image charts: key `{PREVIEW_KEY}` (validation frames, one per improving epoch).

| stage | selection metric | summary metric (best epoch) |
|---|---|---|
{rows}

A trial's table value of `val/*` is its *last* epoch; selection and `best/*` use its *best* epoch.
"""
