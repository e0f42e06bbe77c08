"""Report of a finished sweep: ``python -m sweep.report SWEEP_DIR [--out DIR] [--no-log]``.

SWEEP_DIR is a sweep's folder (``runs/sweeps/<study>/``); its ``sweep.json`` names the MLflow
store (``$MLFLOW_TRACKING_URI`` overrides it) and the Optuna storage. Writes ``report.md`` and
``report.html`` (the same content) and PNG figures to ``--out`` (default ``SWEEP_DIR/report/``),
then logs that folder under ``report/`` to every parent run of the study unless ``--no-log``.

The report holds one row per architecture with the validation-best trial of each stage
(``sweep.select``): parameters, NYU metrics, DIW accuracy and WHDR, CPU latency. Test-split
numbers are used where ``sweep.export`` logged them, else the winner's validation numbers at its
best epoch. Then Pareto fronts (validation metric against parameters and against latency), the
Optuna optimisation history and parameter importances per stage, and predictions of the NYU
winners on a few frames.
"""

from __future__ import annotations

import argparse
import html
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from mlflow import MlflowClient

from depthcore.baselines import TITLES
from depthcore.stages import DEPTH_STAGE, ORDINAL_STAGE, STAGE_NAMES, STAGES
from sweep.record import RecordError, SweepRecord, read_record
from sweep.report import sections
from sweep.report.baselines import BASELINE_NOTE, baseline_rows, lead_over_baselines
from sweep.report.figures import Block, arch_label
from sweep.report.sections import Models
from sweep.select import SelectionError, Study, TrialRun, load_study, value_at
from sweep.tracking import TAG_PARAMETER_COUNT, TAG_STAGE1_RUN

TABLE_KEYS = {name: tuple(m.removeprefix("val/") for m in stage.shown) for name, stage in STAGES.items()}
"""The metrics the main table shows per stage (without their ``val/`` or ``test/`` prefix)."""
COLUMN_NAMES = {"rmse": "RMSE", "abs_rel": "AbsRel", "d1": "δ1", "mse_norm": "MSE (norm.)",
                "accuracy": "accuracy", "whdr": "WHDR"}
LATENCY_METRIC = "export/latency_ms"
STAGE1_DIW_KEY = "accuracy"
SEED_ROWS = (("U-Net++", "0.032", "65.3 %"), ("LR-ASPP MobileNetV3", "0.058", "58.4 %"))
OWN_FILES = re.compile(r"^(report\.(md|html)|(pareto|history|importances)_\w+\.png|predictions\.png)$")


class ReportError(RuntimeError):
    """The sweep folder, its ``sweep.json``, its MLflow store or its studies are missing (one line)."""


@dataclass
class ReportResult:
    out_dir: Path
    markdown: Path
    html: Path
    plots: list[Path]
    """Every PNG the report shows, in the order it shows them."""
    rows: list[dict[str, Any]]
    """The main table, one dict per architecture (raw numbers, ``None`` where a stage has no winner)."""
    notes: list[str] = field(default_factory=list)
    """Why a figure is missing (e.g. too few trials for importances)."""
    logged_to: list[str] = field(default_factory=list)
    """Parent run ids the folder was logged to."""
    baselines: list[dict[str, Any]] = field(default_factory=list)
    """The table's baseline rows (``baseline``: the name in ``depthcore.baselines``, then the same keys)."""

    @property
    def paths(self) -> list[Path]:
        return [self.markdown, self.html, *self.plots]


def read_sweep(sweep_dir: str | Path) -> SweepRecord:
    """The sweep's record, its SQLite stores checked (a report never creates an empty one)."""
    try:
        return read_record(sweep_dir, check_stores=True)
    except RecordError as err:
        raise ReportError(str(err)) from None


# -- the table --------------------------------------------------------------------------------------


def stage_numbers(client: MlflowClient, run: TrialRun, stage: str) -> tuple[str, dict[str, float]]:
    """``("test", test/*)`` when ``sweep.export`` logged them, else ``("validation", val/* at the best epoch)``."""
    keys = TABLE_KEYS[stage]
    if all(f"test/{k}" in run.metrics for k in keys):
        return "test", {k: float(run.metrics[f"test/{k}"]) for k in keys}
    return "validation", {k: value_at(client, run.run_id, f"val/{k}", run.epoch) for k in keys}


def table_rows(study: Study, client: MlflowClient, models: Models) -> list[dict[str, Any]]:
    """One row per architecture from the validation-best trial of each stage."""
    winners = study.winners()
    archs = sorted({a for stage in winners.values() for a in stage})
    rows = []
    for arch in archs:
        row: dict[str, Any] = {"architecture": arch}
        picked = {stage: winners.get(stage, {}).get(arch) for stage in STAGE_NAMES}
        base = next(run for run in picked.values() if run is not None)
        assert base is not None
        count = base.tags.get(TAG_PARAMETER_COUNT)
        row["parameter_count"] = int(count) if count and count.isdigit() else None
        for stage in STAGE_NAMES:
            run = picked[stage]
            row[f"{stage}_run_id"] = run.run_id if run else None
            row[f"{stage}_trial"] = (run.tags.get("ray_trial_id") or run.trial_key) if run else None
            row[f"{stage}_epoch"] = run.epoch if run else None
            row[f"{stage}_value"] = run.value if run else None
            if STAGES[stage].finetunes:
                row[f"{stage}_stage1_run_id"] = run.tags.get(TAG_STAGE1_RUN) if run else None
            split, values = stage_numbers(client, run, stage) if run else (None, {})
            row[f"{stage}_split"] = split
            for k in TABLE_KEYS[stage]:
                row[f"{stage}_{k}"] = values.get(k)
        # What stage 2 did: the stage-1 winner's own DIW test accuracy, when sweep.export logged it.
        first = picked[DEPTH_STAGE.name]
        before = first.metrics.get(f"test/{STAGE1_DIW_KEY}") if first else None
        row["stage1_diw_accuracy"] = float(before) if before is not None else None
        logged = [r.metrics[LATENCY_METRIC] for r in picked.values() if r and LATENCY_METRIC in r.metrics]
        if logged:
            row["latency_ms"], row["latency_source"] = float(logged[0]), "sweep.export"
        else:
            row["latency_ms"], row["latency_source"] = models.latency_ms(base), "measured"
        size = models.size(base)
        row["latency_size"] = list(size) if size else None
        rows.append(row)
    return rows


def _num(value: float | None, fmt: str = ".4f") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _column_split(rows: list[dict[str, Any]], stage: str) -> str:
    splits = {r[f"{stage}_split"] for r in rows if r[f"{stage}_split"]}
    return "test" if splits == {"test"} else "val" if splits == {"validation"} else "test / val*" if splits else ""


def main_table(rows: list[dict[str, Any]], baselines: list[dict[str, Any]] | None = None
               ) -> tuple[list[str], list[list[str]]]:
    split = {stage: _column_split(rows, stage) for stage in STAGE_NAMES}
    headers = ["architecture", "parameters"]
    headers += [f"{STAGES[s].label} {COLUMN_NAMES[k]} ({split[s]})" for s in STAGE_NAMES for k in TABLE_KEYS[s]]
    headers += ["DIW accuracy before stage 2 (test)", "RMSE below the best baseline", "CPU latency (ms)"]
    body = []
    for r in rows:
        cells = [arch_label(r["architecture"]),
                 _num(r["parameter_count"] / 1e6, ".2f") + " M" if r["parameter_count"] else "–"]
        for stage in STAGE_NAMES:
            mark = "*" if split[stage] == "test / val*" and r[f"{stage}_split"] == "validation" else ""
            for k in TABLE_KEYS[stage]:
                value = r[f"{stage}_{k}"]
                text = _num(100 * value, ".1f") + " %" if k == "accuracy" and value is not None else _num(value)
                cells.append(text + (mark if text != "–" else ""))
        before = r.get("stage1_diw_accuracy")
        cells.append(_num(100 * before, ".1f") + " %" if before is not None else "–")
        cells.append(lead_over_baselines(r, baselines or []))
        cells.append(_num(r["latency_ms"], ".2f"))
        body.append(cells)
    for b in baselines or []:
        cells = [f"baseline: {TITLES[b['baseline']]}", "–"]
        for stage in STAGE_NAMES:
            for k in TABLE_KEYS[stage]:
                value = b.get(f"{stage}_{k}")
                cells.append(_num(100 * value, ".1f") + " %" if k == "accuracy" and value is not None else _num(value))
        body.append(cells + ["–", "–", "–"])
    return headers, body


# -- document ----------------------------------------------------------------------------------------


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append("#" * block[1] + " " + block[2])
        elif kind == "p":
            out.append(block[1])
        elif kind == "table":
            out.append("| " + " | ".join(block[1]) + " |")
            out.append("|" + "---|" * len(block[1]))
            out.extend("| " + " | ".join(row) + " |" for row in block[2])
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})")
        elif kind == "ul":
            out.extend(f"- {item}" for item in block[1])
        out.append("")
    return "\n".join(out)


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))


def to_html(blocks: list[Block], title: str) -> str:
    out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
           "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}"
           "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style>", "</head><body>"]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
        elif kind == "p":
            out.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "table":
            out.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in block[1]) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block[2])
            out.append("</table>")
        elif kind == "img":
            out.append(f'<p><img src="{html.escape(block[1])}" alt="{html.escape(block[2])}"></p>')
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block[1]) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# -- putting it together ---------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(f"report: {message}", flush=True)


def build_report(sweep_dir: str | Path, out_dir: str | Path | None = None, log: bool = True,
                 *, progress: Callable[[str], None] | None = _say) -> ReportResult:
    """Write the report of the sweep in ``sweep_dir`` to ``out_dir`` (default ``sweep_dir/report``).

    With ``log``, the folder is logged under ``report/`` to every parent run of the study.
    Raises :class:`ReportError` (one line) for a missing folder, ``sweep.json``, store or study.
    """
    say = progress or (lambda message: None)
    info = read_sweep(sweep_dir)
    out = Path(out_dir) if out_dir is not None else info.dir / "report"
    say(f"loading the MLflow runs of study {info.name} from {info.tracking_uri}")
    try:
        study = load_study(info.tracking_uri, info.name)
    except SelectionError as err:
        raise ReportError(str(err)) from None
    client = MlflowClient(info.tracking_uri)
    stages = [s for s in STAGE_NAMES if s in study.parents] + sorted(s for s in study.parents if s not in STAGES)
    available = set(optuna.get_all_study_names(storage=info.optuna_storage))
    studies = {s: f"{info.name}-{s}" for s in stages if f"{info.name}-{s}" in available}
    if not studies:
        raise ReportError(f"Optuna storage {info.optuna_storage}: no study "
                          f"{' or '.join(f'{info.name}-{s}' for s in stages)}; studies there: "
                          f"{', '.join(sorted(available)) or 'none'}")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():  # figures of an earlier report that this one may not redraw
        if old.is_file() and OWN_FILES.match(old.name):
            old.unlink()
    models = Models(study, client, say)

    say("collecting the validation-best trial per stage and architecture")
    rows = table_rows(study, client, models)
    baselines = baseline_rows(study, {stage: _column_split(rows, stage) for stage in STAGE_NAMES}, TABLE_KEYS)
    headers, body = main_table(rows, baselines)
    blocks: list[Block] = [("h", 1, f"Sweep report: {info.name}")]
    counts = ", ".join(f"stage {s}: {len(study.trials.get(s, []))} trials" for s in stages)
    blocks.append(("p", f"Sweep folder `{info.dir.resolve()}`; MLflow `{info.tracking_uri}` (experiment "
                        f"{info.name}); Optuna `{info.optuna_storage}`. {counts}."))
    blocks += [("h", 2, "Best trial per architecture"), ("table", headers, body)]
    blocks += _table_notes(rows, info)
    if any(r.get("stage1_diw_accuracy") is not None for r in rows):
        blocks.append(("p", "DIW accuracy before stage 2: the stage-1 (NYU) winner's own accuracy on the DIW test "
                            "pairs, as `sweep.export` logged it; beside the DIW accuracy column it shows what the "
                            "ranking fine-tune added, or took away."))
    if baselines:
        blocks.append(("p", BASELINE_NOTE))
    blocks += [("h", 3, "Winners"), ("table", ["stage", "architecture", "trial", "state", "best epoch",
                                               "selection metric", "MLflow run"], _winner_rows(study))]
    synthetic = bool((info.spec.get("data") or {}).get("synthetic"))
    blocks += [("h", 3, "Seed study, for reference"),
               ("p", "The seed study's numbers, measured on 200×200 NYU Depth V2: "
                     + ("not comparable with this sweep's, which ran on synthetic data." if synthetic else
                        "comparable with this sweep's only at the same size, split and metric definitions.")),
               ("table", ["model", "NYU MSE (normalised depth)", "DIW accuracy"], [list(r) for r in SEED_ROWS])]

    say("drawing Pareto fronts")
    pareto, written = sections.pareto_section(study, models, stages, out)
    history, imps, optuna_written, notes = sections.optuna_sections(studies, info.optuna_storage, study, stages, out, say)
    predictions, predicted, prediction_notes = sections.predictions_section(study, client, out, say)
    blocks += pareto + history + imps + predictions
    written += optuna_written + predicted
    notes += prediction_notes + models.failures
    if models.failures:
        blocks += [("h", 2, "Notes"), ("ul", models.failures)]

    markdown, page = out / "report.md", out / "report.html"
    markdown.write_text(to_markdown(blocks))
    page.write_text(to_html(blocks, f"Sweep report: {info.name}"))
    result = ReportResult(out, markdown, page, written, rows, notes, baselines=baselines)
    if log:
        for stage, parent in study.parents.items():
            say(f"logging {out} to the {stage} parent run {parent.info.run_id} under report/")
            client.log_artifacts(parent.info.run_id, str(out), "report")
            result.logged_to.append(parent.info.run_id)
    return result


def _table_notes(rows: list[dict[str, Any]], info: SweepRecord) -> list[Block]:
    lines = []
    by_split: dict[str, list[str]] = {}
    for stage, name in ((name, stage.label) for name, stage in STAGES.items()):
        splits = {r[f"{stage}_split"] for r in rows if r[f"{stage}_split"]}
        if splits:
            by_split.setdefault("test" if splits == {"test"} else "mixed" if len(splits) > 1 else "val", []).append(name)
    lines.append("RMSE in metres; δ1: share of pixels within a factor 1.25 of the truth; MSE (norm.): mean squared "
                 "error after min-max normalising each image's depths to [0, 1] (`mse_norm`); DIW accuracy: share "
                 "of point pairs ordered correctly, WHDR = 1 - accuracy.")
    if "test" in by_split:
        lines.append(f"{' and '.join(by_split['test'])} columns: test split, as logged by `sweep.export` "
                     f"to each winner's run.")
    for kind in ("val", "mixed"):
        if kind in by_split:
            star = " (* marks them; the others are test-split numbers)" if kind == "mixed" else ""
            lines.append(f"{' and '.join(by_split[kind])} columns: validation numbers at each winner's best epoch"
                         f"{star}, not test numbers; `python -m sweep.export {info.dir}` evaluates the winners "
                         f"on the test split.")
    measured = [r for r in rows if r["latency_source"] == "measured" and r["latency_ms"] is not None]
    if measured:
        sizes = sorted({"x".join(map(str, r["latency_size"])) for r in measured if r["latency_size"]})
        lines.append(f"CPU latency ({', '.join(arch_label(r['architecture']) for r in measured)}) measured "
                     f"now on this machine: median of 10 forward passes, batch 1, 1 thread, at the training size "
                     f"{', '.join(sizes)}.")
    exported = [arch_label(r["architecture"]) for r in rows if r["latency_source"] == "sweep.export"]
    if exported:
        lines.append(f"CPU latency ({', '.join(exported)}) as logged by `sweep.export` (`{LATENCY_METRIC}`).")
    for r in rows:
        first, tuned = DEPTH_STAGE, ORDINAL_STAGE
        if r[f"{first.name}_run_id"] and r[f"{tuned.name}_run_id"] and \
                r[f"{tuned.name}_stage1_run_id"] != r[f"{first.name}_run_id"]:
            lines.append(f"{arch_label(r['architecture'])}: the {tuned.label} winner (trial {r[f'{tuned.name}_trial']}) "
                         f"fine-tunes another stage-1 trial than the {first.label} winner (trial "
                         f"{r[f'{first.name}_trial']}); parameters and latency are the {first.label} winner's.")
    return [("p", line) for line in lines]


def _winner_rows(study: Study) -> list[list[str]]:
    rows = []
    winners = study.winners()
    for stage in sorted(winners, key=lambda s: (STAGE_NAMES + (s,)).index(s)):
        for arch, run in winners[stage].items():
            rows.append([stage, arch_label(arch), run.tags.get("ray_trial_id") or run.trial_key,
                         run.state.replace("_", " "), str(run.epoch), f"{run.metric} {run.value:.4f}", f"`{run.run_id}`"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a sweep's folder, e.g. runs/sweeps/<study>/ (holds sweep.json)")
    parser.add_argument("--out", help="where to write the report (default: SWEEP_DIR/report/)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the study's parent runs")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        result = build_report(args.sweep_dir, args.out, log=not args.no_log)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    headers, body = main_table(result.rows, result.baselines)
    print(to_markdown([("table", headers, body)]).rstrip())
    print(f"\nreport written to {result.markdown} and {result.html} ({len(result.plots)} figure(s))")
    for note in result.notes:
        print(f"note: {note}")
    if result.logged_to:
        print(f"logged under report/ to parent run(s) {', '.join(result.logged_to)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
