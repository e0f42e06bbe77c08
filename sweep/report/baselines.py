"""The report table's baseline rows (``depthcore.baselines``) and each model's lead over the best of them."""

from __future__ import annotations

from typing import Any

from depthcore.baselines import TITLES, best_baseline, gain_over
from depthcore.stages import DEPTH_STAGE, STAGE_NAMES
from sweep.select import Study

BASELINE_NOTE = ("Baseline rows: trivial predictors scored on the same split as the column (`depthcore.baselines`): "
                 "the constant and the per-row prior are the mean training depth overall and per image row, "
                 "fitted on the training split only; the DIW rule orders each pair by its points' rows alone "
                 "(50 % is chance). A model is only as good as its lead over the best of them.")


def baseline_rows(study: Study, splits: dict[str, str], keys: dict[str, tuple[str, ...]]) -> list[dict[str, Any]]:
    """One row per baseline of ``depthcore.baselines``, on the split each stage's column shows: the test
    numbers ``sweep.export`` logged to a winner's run (``baseline/<name>/test/<metric>``), else the
    validation numbers the sweep logged to the stage's parent run (``baseline/<name>/val/<metric>``)."""
    found: dict[str, dict[str, Any]] = {}
    winners = study.winners()
    for stage in STAGE_NAMES:
        split = splits.get(stage, "")
        sources = ([run.metrics for run in winners.get(stage, {}).values()] if split == "test" else
                   [study.parents[stage].data.metrics] if stage in study.parents and split == "val" else [])
        prefix = "test" if split == "test" else "val"
        for metrics in sources:
            for key, value in metrics.items():
                parts = key.split("/")
                if len(parts) == 4 and parts[0] == "baseline" and parts[2] == prefix and parts[3] in keys[stage]:
                    row = found.setdefault(parts[1], {"baseline": parts[1]})
                    row.setdefault(f"{stage}_{parts[3]}", float(value))
    return [found[name] for name in TITLES if name in found]


def lead_over_baselines(row: dict[str, Any], baselines: list[dict[str, Any]]) -> str:
    """The column "RMSE below the best baseline" of a model row."""
    key = f"{DEPTH_STAGE.name}_rmse"
    numbers = {b["baseline"]: {"rmse": b[key]} for b in baselines if b.get(key) is not None}
    best = best_baseline(numbers, "rmse")
    if best is None or row.get(key) is None:
        return "–"
    return f"{100 * gain_over(row[key], best[1], 'rmse'):.1f} %"
