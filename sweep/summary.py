"""The table printed when a sweep ends: best trial per architecture and stage, and where to look next."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from depthcore.baselines import TITLES, best_baseline, gain_over
from depthcore.config import flatten
from depthcore.stages import STAGES, mode_of
from sweep.record import read_record
from sweep.redact import redact
from sweep.spec import SweepSpec


def format_summary(summary: dict[str, dict[str, dict[str, Any]]],
                   baselines: dict[str, dict[str, dict[str, float]]] | None = None) -> str:
    """Markdown-style table of the best trial per (stage, architecture), with the stage's baselines
    (``baselines[stage][name]``: validation numbers under the same ``val/...`` keys) as rows below
    and a column of how far each winner beats the best of them."""
    lines = []
    for stage, best in summary.items():
        keys = list(STAGES[stage].shown)
        own = (baselines or {}).get(stage, {})
        compared = keys[0]
        lines.append(f"\nstage {stage}: best trial per architecture (selected by {next(iter(best.values()))['metric'] if best else keys[0]})")
        lines.append("| architecture | trial | state | epoch | " + " | ".join(keys) + f" | {beyond_header(compared)} | MLflow run |")
        lines.append("|" + "---|" * (6 + len(keys)))
        top = best_baseline(own, compared)
        for arch, row in sorted(best.items()):
            values = " | ".join(f"{row['metrics'].get(k, float('nan')):.4f}" for k in keys)
            gain = beyond_text(row["metrics"].get(compared, float("nan")), top, compared)
            lines.append(f"| {arch} | {row['trial_id']} | {row['state']} | {row['epoch']} | {values} | {gain} | {row['run_id']} |")
        for name, numbers in own.items():
            values = " | ".join(f"{numbers.get(k, float('nan')):.4f}" for k in keys)
            lines.append(f"| baseline: {TITLES[name]} | – | – | – | {values} | – | – |")
        for arch, row in sorted(best.items()):
            params = ", ".join(f"{k}={v}" for k, v in flatten(row["params"]).items())
            lines.append(f"  {arch}: {params}")
            lines.append(f"  {arch} checkpoint: {row['checkpoint']}")
    return "\n".join(lines)


def beyond_header(metric: str) -> str:
    """``RMSE below the best baseline`` (an error) or ``accuracy above the best baseline``."""
    name = metric.split("/")[-1]
    label = {"rmse": "RMSE", "whdr": "WHDR"}.get(name, name)
    return f"{label} {'above' if mode_of(metric) == 'max' else 'below'} the best baseline"


def beyond_text(value: float, top: tuple[str, float] | None, metric: str) -> str:
    """A winner's lead over the best baseline: ``31.2 %`` below it (an error) or ``12.0 points`` above it."""
    if top is None or value != value:
        return "–"
    gain = gain_over(value, top[1], metric)
    return f"{100 * gain:.1f} points" if mode_of(metric) == "max" else f"{100 * gain:.1f} %"


def print_summary(summary: dict[str, Any], spec: SweepSpec, sweep_dir: Path, tracking_uri: str, seconds: float,
                  baselines: dict[str, dict[str, dict[str, float]]] | None = None, *, optuna_storage: str) -> None:
    print(format_summary(summary, baselines))
    print(f"\nsweep {sweep_dir.name} finished in {seconds / 60:.1f} min; results in {sweep_dir}")
    studies = ", ".join(f"{sweep_dir.name}-{stage}" for stage in summary)
    print(f"Optuna studies {studies}: optuna-dashboard {redact(optuna_storage)}  "
          f"(or optuna.load_study(study_name=..., storage=...))")
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
        lines.append(f"  models:   {sweep_dir / 'export'}/<architecture>-<stage>/ (MODEL_CARD.md, model.pt2, model.onnx)")
        lines.append(f"  predict:  python -m sweep.predict --model {sweep_dir / 'export'}/<architecture>-<stage>  YOUR_IMAGES/")
    lines.append("  " + mlflow_ui_line(record.tracking_uri))
    return "\n".join(lines)
