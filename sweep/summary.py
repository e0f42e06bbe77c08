"""The table printed when a sweep ends: best trial per architecture and stage, and where to look next."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from depthcore.config import flatten
from depthcore.stages import STAGES
from sweep.record import read_record
from sweep.spec import SweepSpec


def format_summary(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown-style table of the best trial per (stage, architecture)."""
    lines = []
    for stage, best in summary.items():
        keys = list(STAGES[stage].shown)
        lines.append(f"\nstage {stage}: best trial per architecture (selected by {next(iter(best.values()))['metric'] if best else keys[0]})")
        lines.append("| architecture | trial | state | epoch | " + " | ".join(keys) + " | MLflow run |")
        lines.append("|" + "---|" * (5 + len(keys)))
        for arch, row in sorted(best.items()):
            values = " | ".join(f"{row['metrics'].get(k, float('nan')):.4f}" for k in keys)
            lines.append(f"| {arch} | {row['trial_id']} | {row['state']} | {row['epoch']} | {values} | {row['run_id']} |")
        for arch, row in sorted(best.items()):
            params = ", ".join(f"{k}={v}" for k, v in flatten(row["params"]).items())
            lines.append(f"  {arch}: {params}")
            lines.append(f"  {arch} checkpoint: {row['checkpoint']}")
    return "\n".join(lines)


def print_summary(summary: dict[str, Any], spec: SweepSpec, sweep_dir: Path, tracking_uri: str, seconds: float) -> None:
    print(format_summary(summary))
    print(f"\nsweep {sweep_dir.name} finished in {seconds / 60:.1f} min; results in {sweep_dir}")
    print(f"Optuna study: optuna-dashboard or optuna.load_study(storage='sqlite:///{sweep_dir / 'optuna.db'}')")
    print(mlflow_ui_line(tracking_uri))


def mlflow_ui_line(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"MLflow: open {tracking_uri}"
    return f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri}   (then open http://127.0.0.1:5000)"


def next_steps(sweep_dir: Path, *, export: bool, report: bool) -> str:
    """Where to look once a sweep, its export and its report are done."""
    record = read_record(sweep_dir)
    lines = ["next:"]
    if report:
        lines.append(f"  report:   {sweep_dir / 'report' / 'report.md'} (and report.html)")
    if export:
        lines.append(f"  models:   {sweep_dir / 'export'}/<architecture>-<stage>/ (MODEL_CARD.md, model.pt, model.onnx)")
        lines.append(f"  predict:  python -m sweep.predict --model {sweep_dir / 'export'}/unetpp-nyu  YOUR_IMAGES/")
    lines.append("  " + mlflow_ui_line(record.tracking_uri))
    return "\n".join(lines)
