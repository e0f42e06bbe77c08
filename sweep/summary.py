"""The table printed when a sweep ends: best trial per architecture and stage, and where to look next."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from depthcore.config import flatten
from sweep.space import SweepSpec

SHOWN_METRICS = {"nyu": ["val/rmse", "val/abs_rel", "val/d1", "val/mse_norm"], "diw": ["val/whdr", "val/accuracy"]}


def format_summary(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown-style table of the best trial per (stage, architecture)."""
    lines = []
    for stage, best in summary.items():
        keys = SHOWN_METRICS[stage]
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
    if tracking_uri.startswith(("http://", "https://")):
        print(f"MLflow: open {tracking_uri}")
    else:
        print(f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri}   (then open http://127.0.0.1:5000)")
