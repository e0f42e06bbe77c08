"""Figures of the sweep report, pure: data in, PNG out (the data comes from ``sweep.report.sections``).

Pareto fronts (validation metric against parameter count and CPU latency), Optuna optimisation
histories and parameter importances per stage. Figures are drawn with matplotlib's object API on
the Agg canvas, as in ``depthcore.viz``: no display, no pyplot state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from depthcore.models import get_family, list_families

DPI = 110
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:gray")
"""One colour per architecture family, in the registry's order, so a family keeps its colour across reports."""
FINISHED_STATES = ("completed", "stopped_early")
MIN_IMPORTANCE_TRIALS = 3
PREDICTION_FRAMES = 3


def arch_color(arch: str, known: Sequence[str] = ()) -> str:
    families = list_families()
    order = families + sorted(a for a in set(known) | {arch} if a not in families)
    return COLORS[order.index(arch) % len(COLORS)]


def arch_label(arch: str) -> str:
    """The family's label for people (``U-Net++``); an unknown name as it is."""
    try:
        return get_family(arch).label
    except KeyError:
        return arch


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
