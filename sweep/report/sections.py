"""The data behind the report's figures, for ``sweep.report``: each ``*_section`` reads the
sweep (MLflow runs, Optuna studies, checkpoints), draws with ``sweep.report.figures`` and returns
report blocks (see ``figures.Block``), the PNGs it wrote, and notes on what it could not draw.

Optuna trials are linked to MLflow runs by id (user attributes the sweep's searcher sets), and a
run's model and size come from its logged ``config.yaml``, typed as the trial used them.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from depthcore.checkpoint import FILENAME, load_checkpoint, model_from_checkpoint
from depthcore.config import ConfigError, ExperimentConfig
from depthcore.latency import cpu_latency_ms
from depthcore.loaders import nyu_dataset
from depthcore.models import model_from_spec
from depthcore.stages import DEPTH_STAGE
from depthcore.viz import preview_predictions
from sweep.report.figures import (
    FINISHED_STATES,
    MIN_IMPORTANCE_TRIALS,
    PREDICTION_FRAMES,
    Block,
    HistoryTrial,
    Point,
    arch_label,
    plot_history,
    plot_importances,
    plot_pareto,
    stack_pngs,
)
from sweep.select import Study, TrialRun
from sweep.tracking import (
    CHECKPOINT_DIR,
    CONFIG_ARTIFACT,
    TAG_PARAMETER_COUNT,
    TAG_RAY_TRIAL,
    USER_ATTR_MLFLOW,
    USER_ATTR_RAY,
    first_line,
)

# -- models and latency ----------------------------------------------------------------------------


class Models:
    """Model spec, size and CPU latency of trial runs; latency measured once per distinct spec and size."""

    def __init__(self, study: Study, client: MlflowClient, progress: Callable[[str], None]) -> None:
        self.client = client
        self.progress = progress
        self.by_id = {r.run_id: r for runs in study.trials.values() for r in runs}
        self._latency: dict[str, float | None] = {}
        self.failures: list[str] = []
        """One line per model spec whose latency could not be measured."""
        self._configs: dict[str, dict[str, Any]] = {}

    def config(self, run: TrialRun) -> dict[str, Any]:
        """The run's training config as logged (``config.yaml``), typed as the trial used it; {} if missing.

        A fine-tuning trial's config records the stage-1 model it trained, so every run's model is here.
        """
        if run.run_id not in self._configs:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    path = self.client.download_artifacts(run.run_id, CONFIG_ARTIFACT, tmp)
                    loaded = yaml.safe_load(Path(path).read_text())
                self._configs[run.run_id] = loaded if isinstance(loaded, dict) else {}
            except Exception:
                self._configs[run.run_id] = {}
        return self._configs[run.run_id]

    def spec(self, run: TrialRun) -> dict[str, Any] | None:
        model = self.config(run).get("model")
        if not isinstance(model, dict) or not model.get("name"):
            return None
        return {"name": model["name"], "args": dict(model.get("args") or {})}

    def size(self, run: TrialRun) -> tuple[int, int] | None:
        size = (self.config(run).get("data") or {}).get("size")
        return (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) and len(size) == 2 else None

    def latency_ms(self, run: TrialRun) -> float | None:
        """Median ms of one forward pass, batch 1, 1 thread, at the run's training size (None: unknown)."""
        spec, size = self.spec(run), self.size(run)
        if spec is None or size is None:
            return None
        key = json.dumps([spec, size], sort_keys=True, default=str)
        if key not in self._latency:
            args = f" {spec['args']}" if spec["args"] else ""
            self.progress(f"measuring CPU latency of {spec['name']}{args} at {size[0]}x{size[1]}")
            try:
                model = model_from_spec(spec)
                self._latency[key] = cpu_latency_ms(model, size, batch=1, threads=1)["median_ms"]
            except Exception as err:  # an unknown name or argument here costs a number, not the report
                self._latency[key] = None
                self.failures.append(f"no CPU latency for {spec['name']}{args} at {size[0]}x{size[1]}: "
                                     f"{first_line(err)}")
        return self._latency[key]


def _finished(study: Study, stage: str) -> list[TrialRun]:
    return [r for r in study.trials.get(stage, []) if r.state in FINISHED_STATES and math.isfinite(r.value)]


def _trial_name(run: TrialRun) -> str:
    return f"{run.architecture} trial {run.tags.get('ray_trial_id') or run.trial_key}"


def pareto_section(study: Study, models: Models, stages: list[str], out: Path) -> tuple[list[Block], list[Path]]:
    blocks: list[Block] = [("h", 2, "Pareto fronts")]
    written = []
    for kind, xlabel, file in (("params", "parameters (millions)", "pareto_params.png"),
                               ("latency", "CPU latency (ms, batch 1, 1 thread, training size)", "pareto_latency.png")):
        panels = []
        for stage in stages:
            points = []
            for run in _finished(study, stage):
                count = run.tags.get(TAG_PARAMETER_COUNT, "")
                x = (int(count) / 1e6 if count.isdigit() else None) if kind == "params" else models.latency_ms(run)
                if x is not None:
                    points.append(Point(x, run.value, run.architecture, _trial_name(run),
                                              run.state == "stopped_early"))
            runs = study.trials.get(stage) or []
            if points:
                panels.append((stage, runs[0].metric, runs[0].mode, points))
        if not panels:
            blocks.append(("p", f"No finished trial with a known {kind} cost: `{file}` not drawn."))
            continue
        fronts = plot_pareto(panels, xlabel, out / file)
        written.append(out / file)
        unit = " M" if kind == "params" else " ms"
        blocks.append(("img", file, f"validation metric against {kind}"))
        blocks.append(("ul", [f"stage {stage}, {kind} front: " + "; ".join(
            f"{p.label} ({p.x:.3g}{unit}, {p.y:.4f})" for p in front) for stage, front in fronts.items()]))
    return blocks, written


def trial_architecture(trial: optuna.trial.FrozenTrial, stage: str, study: Study) -> str:
    """The architecture of an Optuna trial, from the MLflow run it is linked to by id (``mlflow_run_id``
    or ``ray_trial_id`` user attribute, set by the sweep's searcher); ``?`` when it has no run."""
    runs = study.trials.get(stage, [])
    run_id = trial.user_attrs.get(USER_ATTR_MLFLOW)
    ray_id = trial.user_attrs.get(USER_ATTR_RAY)
    for run in runs:
        if (run_id and run.run_id == run_id) or (ray_id and run.tags.get(TAG_RAY_TRIAL) == ray_id):
            return run.architecture
    return "?"


def importances(ostudy: optuna.Study) -> tuple[dict[str, float] | None, str, int]:
    """``(importances, note, complete trials)``; importances is None when they cannot be computed (note says why)."""
    complete = [t for t in ostudy.trials if t.state == TrialState.COMPLETE and t.value is not None
                and math.isfinite(t.value)]
    n = len(complete)
    if n < MIN_IMPORTANCE_TRIALS:
        return None, (f"only {n} complete trial(s); parameter importances need at least {MIN_IMPORTANCE_TRIALS} "
                      f"(pruned trials do not count)"), n
    if len({t.value for t in complete}) == 1:
        return None, f"all {n} complete trials have the same value, so no parameter explains any difference", n
    names = sorted({k for t in complete for k in t.params})
    varied = [k for k in names if len({repr(t.params.get(k)) for t in complete}) > 1]
    fixed = [k for k in names if k not in varied]
    note = f"left out, one value in all complete trials: {', '.join(fixed)}" if fixed else ""
    if not varied:
        return None, f"no parameter took more than one value in the {n} complete trials", n
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = optuna.importance.get_param_importances(ostudy, params=varied)
        except Exception as err:  # optuna raises several types for degenerate studies
            return None, f"Optuna could not compute them: {first_line(err)}", n
    messages = sorted({str(w.message).strip().splitlines()[0] for w in caught})
    if any("same set of trials" in m for m in messages):
        return None, f"too few complete trials ({n}) to tell good from bad ones ({messages[0]})", n
    note = "; ".join([note, *messages]).strip("; ")
    return {k: float(v) for k, v in result.items()}, note, n


def optuna_sections(studies: dict[str, str], storage: str, study: Study, stages: list[str], out: Path,
                    progress: Callable[[str], None]) -> tuple[list[Block], list[Block], list[Path], list[str]]:
    """History and importance sections of ``stages``; ``studies``: stage -> Optuna study name (those that exist)."""
    history: list[Block] = [("h", 2, "Optimisation history")]
    imps: list[Block] = [("h", 2, "Parameter importances")]
    written: list[Path] = []
    notes: list[str] = []
    loaded = studies
    for stage in stages:
        if stage not in loaded:
            line = f"Stage {stage}: no Optuna study for this stage in {storage}."
            history.append(("p", line))
            imps.append(("p", line))
            notes.append(line)
            continue
        progress(f"reading Optuna study {loaded[stage]}")
        ostudy = optuna.load_study(study_name=loaded[stage], storage=storage)
        runs = study.trials.get(stage) or []
        metric = runs[0].metric if runs else "value"
        mode = "min" if ostudy.direction == optuna.study.StudyDirection.MINIMIZE else "max"
        points = [HistoryTrial(t.number, float(t.value), trial_architecture(t, stage, study),
                                     t.state == TrialState.PRUNED)
                  for t in ostudy.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                  and t.value is not None and math.isfinite(t.value)]
        counts = {s.name.lower(): sum(t.state == s for t in ostudy.trials) for s in TrialState}
        summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        if points:
            file = f"history_{stage}.png"
            plot_history(points, stage, metric, mode, loaded[stage], out / file)
            written.append(out / file)
            history += [("p", f"Stage {stage}: {len(ostudy.trials)} trials ({summary})."), ("img", file, f"history {stage}")]
        else:
            history.append(("p", f"Stage {stage}: no complete or pruned trial with a value ({summary})."))
        values, note, n = importances(ostudy)
        if values is None:
            line = f"Stage {stage}: parameter importances not computed: {note}."
            imps.append(("p", line))
            notes.append(line)
        else:
            file = f"importances_{stage}.png"
            plot_importances(values, stage, "PED-ANOVA, Optuna's default", n, out / file)
            written.append(out / file)
            extra = f" ({note})" if note else ""
            caveat = "; with this few trials take it as a rough indication" if n < 10 else ""
            imps += [("p", f"Stage {stage}: from {n} complete trials{extra}{caveat}."), ("img", file, f"importances {stage}")]
    return history, imps, written, notes


def predictions_section(study: Study, client: MlflowClient, out: Path,
                        progress: Callable[[str], None]) -> tuple[list[Block], list[Path], list[str]]:
    blocks: list[Block] = [("h", 2, "Predictions of the NYU winners")]
    winners = study.winners().get(DEPTH_STAGE.name, {})
    parts, notes = [], []
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        for arch, run in winners.items():
            progress(f"predicting with the {arch} winner ({_trial_name(run)})")
            try:
                local = client.download_artifacts(run.run_id, f"{CHECKPOINT_DIR}/{FILENAME}", tmp)
                payload = load_checkpoint(local)
                cfg = ExperimentConfig.from_dict(payload["config"]).replace(data={"augment": False})
                data, split = None, ""
                for split in ("test", "val"):
                    try:
                        data = nyu_dataset(cfg, split)
                        if len(data):
                            break
                    except (ConfigError, ValueError, KeyError):
                        data = None
                if data is None or not len(data):
                    raise FileNotFoundError(f"NYU data {cfg.data.nyu_path} has no test or validation frames here")
                title = f"{arch_label(arch)}: {_trial_name(run)}, epoch {payload['epoch']}, NYU {split} split"
                parts.append(preview_predictions(model_from_checkpoint(payload), data, Path(tmp) / f"{arch}.png",
                                                 n=PREDICTION_FRAMES, title=title))
                os.remove(local)
            except Exception as err:  # a missing artifact or data file costs a picture, not the report
                notes.append(f"{arch} winner {run.run_id}: no predictions ({first_line(err)})")
        if parts:
            stack_pngs(parts, out / "predictions.png")
    if parts:
        blocks += [("p", "Input | ground truth | prediction, the first frames of the split; both depth panels "
                         "of a row share one colour scale."), ("img", "predictions.png", "predictions")]
    for line in notes:
        blocks.append(("p", line + "."))
    if not winners:
        blocks.append(("p", "No NYU winner."))
    return blocks, ([out / "predictions.png"] if parts else []), notes


