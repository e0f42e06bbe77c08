"""Figures of the sweep report and the data behind them, for ``sweep.report``.

Pareto fronts (validation metric against parameter count and CPU latency, latency measured
once per distinct model spec), Optuna optimisation histories and parameter importances per
stage, and predictions of the NYU winners. Each ``*_section`` returns report blocks (see
``Block``), the PNGs it wrote, and notes on what it could not draw. Figures are drawn with
matplotlib's object API on the Agg canvas, as in ``depthcore.viz``: no display, no pyplot state.
"""

from __future__ import annotations

import ast
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mlflow import MlflowClient
from optuna.trial import TrialState
from PIL import Image

from depthcore.checkpoint import FILENAME, load_checkpoint, model_from_checkpoint
from depthcore.config import ConfigError, ExperimentConfig, set_dotted
from depthcore.latency import cpu_latency_ms
from depthcore.loaders import nyu_dataset
from depthcore.models import model_from_spec
from depthcore.viz import preview_predictions
from sweep.select import Study, TrialRun
from sweep.spec import family
from sweep.tracking import CHECKPOINT_DIR, TAG_PARAMETER_COUNT, TAG_STAGE1_RUN, first_line

DPI = 110
ARCH_COLORS = {"unetpp": "tab:blue", "lraspp": "tab:orange"}
OTHER_COLORS = ("tab:green", "tab:red", "tab:purple", "tab:brown", "tab:gray")
ARCH_LABELS = {"unetpp": "U-Net++", "lraspp": "LR-ASPP"}
FINISHED_STATES = ("completed", "stopped_early")
MIN_IMPORTANCE_TRIALS = 3
PREDICTION_FRAMES = 3


def arch_color(arch: str, known: Sequence[str] = ()) -> str:
    if arch in ARCH_COLORS:
        return ARCH_COLORS[arch]
    others = sorted(a for a in set(known) | {arch} if a not in ARCH_COLORS)
    return OTHER_COLORS[others.index(arch) % len(OTHER_COLORS)]


def arch_label(arch: str) -> str:
    return ARCH_LABELS.get(arch, arch)


@dataclass(frozen=True)
class Point:
    """One trial on a Pareto plot: a cost ``x`` (parameters or latency) and its validation value ``y``."""

    x: float
    y: float
    arch: str
    label: str
    """Trial name shown in the report's list of front members."""
    stopped_early: bool = False


@dataclass(frozen=True)
class HistoryTrial:
    """One Optuna trial: its number, value, architecture and whether it was pruned."""

    number: int
    value: float
    arch: str
    pruned: bool


def pareto_front(points: Sequence[Point], mode: str) -> list[Point]:
    """Points no other point beats on both cost (lower) and value (lower for ``min``, higher for ``max``).

    Sorted by cost. Of several points with the same cost and value, one is kept.
    """
    sign = 1.0 if mode == "min" else -1.0
    ordered = sorted(points, key=lambda p: (p.x, sign * p.y))
    front: list[Point] = []
    best = math.inf
    for point in ordered:
        score = sign * point.y
        if score < best:
            front.append(point)
            best = score
    return front


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def plot_pareto(panels: Sequence[tuple[str, str, str, Sequence[Point]]], xlabel: str, path: Path) -> dict[str, list[Point]]:
    """One panel per stage: ``(stage, metric, mode, points)``; returns the front of each stage.

    Trials are coloured by architecture (hollow: stopped early by ASHA); the front is ringed in
    black and joined by a dashed staircase.
    """
    panels = [p for p in panels if p[3]]
    if not panels:
        raise ValueError("plot_pareto: no trial with both a cost and a value")
    fig = _new_figure(5.0 * len(panels), 4.2)
    fronts: dict[str, list[Point]] = {}
    for i, (stage, metric, mode, points) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        archs = sorted({p.arch for p in points})
        for arch in archs:
            color = arch_color(arch, archs)
            for stopped in (False, True):
                chosen = [p for p in points if p.arch == arch and p.stopped_early == stopped]
                if chosen:
                    ax.scatter([p.x for p in chosen], [p.y for p in chosen], s=36, zorder=3,
                               facecolors="none" if stopped else color, edgecolors=color,
                               label=f"{arch_label(arch)}{' (stopped early)' if stopped else ''}")
        front = pareto_front(points, mode)
        fronts[stage] = front
        xs, ys = [p.x for p in front], [p.y for p in front]
        ax.step(xs, ys, where="post", color="black", linestyle="--", linewidth=1, zorder=2)
        ax.scatter(xs, ys, s=110, facecolors="none", edgecolors="black", linewidths=1.3, zorder=4,
                   label="Pareto front")
        low, high = min(p.x for p in points), max(p.x for p in points)
        if low > 0 and high / low > 20:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} (validation, best epoch; {'lower' if mode == 'min' else 'higher'} is better)",
                      fontsize=8)
        ax.set_title(f"stage {stage}: {len(points)} finished trial(s)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return fronts


def plot_history(trials: Sequence[HistoryTrial], stage: str, metric: str, mode: str, study_name: str,
                 path: Path) -> None:
    """Trial number against value per architecture (hollow: pruned), with each architecture's best so far."""
    if not trials:
        raise ValueError("plot_history: no trial with a value")
    fig = _new_figure(7.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    archs = sorted({t.arch for t in trials})
    better = min if mode == "min" else max
    for arch in archs:
        color = arch_color(arch, archs)
        own = sorted((t for t in trials if t.arch == arch), key=lambda t: t.number)
        for pruned in (False, True):
            chosen = [t for t in own if t.pruned == pruned]
            if chosen:
                ax.scatter([t.number for t in chosen], [t.value for t in chosen], s=30, zorder=3,
                           facecolors="none" if pruned else color, edgecolors=color,
                           label=f"{arch_label(arch)} {'pruned' if pruned else 'complete'}")
        best: list[float] = []
        for t in own:
            best.append(t.value if not best else better(best[-1], t.value))
        ax.step([t.number for t in own], best, where="post", color=color, linewidth=1.5,
                label=f"{arch_label(arch)} best so far")
    ax.set_xlabel("trial number")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{metric} (Optuna trial value)")
    ax.set_title(f"stage {stage}: optimisation history (Optuna study {study_name})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, format="png")


def plot_importances(importances: dict[str, float], stage: str, evaluator: str, trials: int, path: Path) -> None:
    """Horizontal bars, most important parameter on top."""
    if not importances:
        raise ValueError("plot_importances: no importances")
    names = list(importances)[::-1]
    fig = _new_figure(6.0, 1.4 + 0.35 * len(names))
    ax = fig.add_subplot(1, 1, 1)
    bars = ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for bar, name in zip(bars, names, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {importances[name]:.3f}",
                va="center", fontsize=8)
    ax.set_xlim(0, max(1.0, max(importances.values())) * 1.15)
    ax.set_xlabel(f"importance (normalised to sum 1; {evaluator}, {trials} complete trials)", fontsize=8)
    ax.set_title(f"stage {stage}: parameter importances", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")


def stack_pngs(parts: Sequence[Path], path: Path) -> None:
    """Put PNGs one under the other on a white page (the widest sets the width)."""
    images = [Image.open(p).convert("RGB") for p in parts]
    if not images:
        raise ValueError("stack_pngs: nothing to stack")
    width = max(im.width for im in images)
    page = Image.new("RGB", (width, sum(im.height for im in images)), "white")
    top = 0
    for im in images:
        page.paste(im, (0, top))
        top += im.height
    page.save(path, format="PNG")


Block = tuple[Any, ...]
"""("h", level, text) | ("p", text) | ("table", headers, rows) | ("img", file, alt) | ("ul", items)."""


# -- models and latency ----------------------------------------------------------------------------


def _value(text: str | None) -> Any:
    """An MLflow param string back to a Python value (``"[32, 32]"`` -> ``[32, 32]``, ``"adamw"`` stays)."""
    if text is None:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def model_spec(params: dict[str, str]) -> dict[str, Any] | None:
    """``{"name", "args"}`` from flat params (``model/name``, ``model/args/...``), or None."""
    name = params.get("model/name")
    if not name:
        return None
    args: dict[str, Any] = {}
    for key, text in params.items():
        if key.startswith("model/args/"):
            set_dotted(args, key[len("model/args/"):], _value(text))
    return {"name": name, "args": args}


class Models:
    """Model spec, size and CPU latency of trial runs; latency measured once per distinct spec and size."""

    def __init__(self, study: Study, client: MlflowClient, progress: Callable[[str], None]) -> None:
        self.client = client
        self.progress = progress
        self.by_id = {r.run_id: r for runs in study.trials.values() for r in runs}
        self._latency: dict[str, float | None] = {}
        self.failures: list[str] = []
        """One line per model spec whose latency could not be measured."""
        self._params: dict[str, dict[str, str]] = {}

    def spec(self, run: TrialRun) -> dict[str, Any] | None:
        """The run's model. A fine-tuning (diw) trial trains its stage-1 trial's model; its own
        ``model/*`` params are the config defaults, so without a stage-1 run its model is unknown."""
        source = run.tags.get(TAG_STAGE1_RUN)
        if run.stage == "nyu":
            return model_spec(run.params)
        if not source:
            return None
        if source not in self._params:
            known = self.by_id.get(source)
            try:
                self._params[source] = known.params if known else dict(self.client.get_run(source).data.params)
            except Exception:
                self._params[source] = {}
        return model_spec(self._params[source])

    @staticmethod
    def size(run: TrialRun) -> tuple[int, int] | None:
        size = _value(run.params.get("data/size"))
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


def _matches(run_params: dict[str, str], trial_params: dict[str, Any]) -> bool:
    for key, want in trial_params.items():
        got = _value(run_params.get(key))
        if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
            if not math.isclose(want, got, rel_tol=1e-9):
                return False
        elif got != want and str(got) != str(want):
            return False
    return True


def trial_architecture(trial: optuna.trial.FrozenTrial, stage: str, study: Study) -> str:
    """The architecture of an Optuna trial: from its MLflow run (same sampled params), else its model param."""
    archs = {r.architecture for r in study.trials.get(stage, []) if _matches(r.params, trial.params)}
    if len(archs) == 1:
        return archs.pop()
    if stage == "nyu" and isinstance(trial.params.get("model/name"), str):
        try:
            return family(trial.params["model/name"])
        except KeyError:
            pass
    stage1 = trial.params.get("stage1_trial")
    if stage1 is not None:
        for run in study.trials.get("nyu", []):
            if run.tags.get("ray_trial_id") == str(stage1):
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
    winners = study.winners().get("nyu", {})
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


