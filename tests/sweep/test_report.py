"""``python -m sweep.report`` on the tiny two-stage sweep: figures, numbers against MLflow, test split, logging."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import optuna
import pytest
from mlflow import MlflowClient
from PIL import Image
from sweep_fixtures import copy_sweep

from sweep.report.cli import build_report, main, to_html, to_markdown
from sweep.report.figures import Point, pareto_front
from sweep.report.sections import importances, trial_architecture
from sweep.select import load_study

pytestmark = pytest.mark.slow

NYU_TEST = ("rmse", "abs_rel", "sq_rel", "rmse_log", "log10", "silog", "d1", "d2", "d3", "mse_norm")


@pytest.fixture(scope="module")
def report(tiny_sweep, tmp_path_factory):
    """The report of study ``tiny`` in a tmp folder, not logged (the study stays as it is)."""
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        return build_report(tiny_sweep["dir"], tmp_path_factory.mktemp("report"), log=False, progress=None)
    finally:
        mp.undo()


def _trial_runs(client: MlflowClient, stage: str) -> list[Any]:
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.stage = '{stage}'")
    return [r for r in runs if r.data.tags.get("depthsweep.trial_state") != "failed"]


def _best(client: MlflowClient, run_id: str, metric: str) -> tuple[float, int]:
    history = client.get_metric_history(run_id, metric)
    best = min(history, key=lambda m: (m.value, m.step))
    return best.value, best.step


def _at(client: MlflowClient, run_id: str, metric: str, step: int) -> float:
    (value,) = [m.value for m in client.get_metric_history(run_id, metric) if m.step == step]
    return value


def test_every_figure_the_report_shows_is_a_valid_png(report):
    markdown = report.markdown.read_text()
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(shown) == sorted(p.name for p in report.plots)
    assert sorted(re.findall(r'<img src="([^"]+)"', report.html.read_text())) == sorted(shown)
    assert {"pareto_params.png", "pareto_latency.png", "history_nyu.png", "history_diw.png",
            "predictions.png"} <= set(shown)
    for name in shown:
        path = report.out_dir / name
        assert path.stat().st_size > 0
        with Image.open(path) as image:
            assert image.format == "PNG"
            image.verify()
    # Importances: a figure, or one line saying why not (the tiny diw stage has 2 trials), never a crash.
    for stage in ("nyu", "diw"):
        figure = f"importances_{stage}.png" in shown
        reason = f"Stage {stage}: parameter importances not computed:" in markdown
        assert figure != reason, stage
        assert not figure or (report.out_dir / f"importances_{stage}.png").is_file()


def test_table_numbers_equal_those_in_mlflow(report, tiny_sweep):
    client = MlflowClient(tiny_sweep["uri"])
    rows = {row["architecture"]: row for row in report.rows}
    markdown = report.markdown.read_text()
    nyu = _trial_runs(client, "nyu")
    assert sorted(rows) == sorted({r.data.tags["architecture"] for r in nyu})
    for arch, row in rows.items():
        scored = [(*_best(client, r.info.run_id, "val/rmse"), r) for r in nyu if r.data.tags["architecture"] == arch]
        value, step, _ = min(scored, key=lambda s: s[:2])
        winners = {run.info.run_id: run for v, s, run in scored if v == value}
        assert row["nyu_run_id"] in winners and row["nyu_split"] == "validation"
        assert row["nyu_rmse"] == value and row["nyu_epoch"] == step
        for key in ("abs_rel", "d1", "mse_norm"):
            assert row[f"nyu_{key}"] == _at(client, row["nyu_run_id"], f"val/{key}", step)
        assert row["parameter_count"] == int(winners[row["nyu_run_id"]].data.tags["parameter_count"])
        assert row["latency_source"] == "measured" and row["latency_ms"] > 0
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {_label(arch)} |"))
        assert f"| {value:.4f} |" in line and f"| {row['latency_ms']:.2f} |" in line
    for arch in {r.data.tags["architecture"] for r in _trial_runs(client, "diw")}:
        scored = [(*_best(client, r.info.run_id, "val/whdr"), r) for r in _trial_runs(client, "diw")
                  if r.data.tags["architecture"] == arch]
        value = min(s[0] for s in scored)
        row = rows[arch]
        assert row["diw_run_id"] in {run.info.run_id for v, s, run in scored if v == value}
        assert row["diw_whdr"] == value and row["diw_split"] == "validation"
        assert row["diw_accuracy"] == _at(client, row["diw_run_id"], "val/accuracy", row["diw_epoch"])
    assert "python -m sweep.export" in markdown and "columns: test split" not in markdown
    assert "Seed study" in markdown and "0.032" in markdown and "58.4 %" in markdown


def _label(arch: str) -> str:
    return {"unetpp": "U-Net++", "lraspp": "LR-ASPP"}[arch]


def test_exported_test_metrics_are_reported_and_the_report_is_logged(report, tiny_sweep, tmp_path):
    sweep_dir, uri = copy_sweep(tiny_sweep, tmp_path)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment.artifact_location.startswith((tmp_path / "mlartifacts").resolve().as_uri())
    # What sweep.export logs, on every stage-1 run: the later a run ranks on validation, the better
    # its test numbers, so a report that selected by test numbers would show other runs.
    nyu = sorted(_trial_runs(client, "nyu"), key=lambda r: _best(client, r.info.run_id, "val/rmse"))
    logged: dict[str, dict[str, float]] = {}
    for i, run in enumerate(nyu):
        values = {f"test/{k}": round(0.5 - 0.1 * i + 0.001 * j, 4) for j, k in enumerate(NYU_TEST)}
        values["export/latency_ms"] = 40.0 + i
        for key, value in values.items():
            client.log_metric(run.info.run_id, key, value)
        logged[run.info.run_id] = values

    # In a fresh process: MLflow caches one artifact repository per run id and process, and the
    # copy's runs have the original's ids, so logging from this process would reach the original.
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    done = subprocess.run([sys.executable, "-m", "sweep.report", str(sweep_dir), "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "report: " in done.stdout and "report written to" in done.stdout
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "NYU columns: test split" in markdown and "DIW columns: validation" in markdown
    assert "NYU RMSE (test)" in markdown and "DIW WHDR (val)" in markdown
    for row in report.rows:  # the same winners as without test metrics
        values = logged[row["nyu_run_id"]]
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {_label(row['architecture'])} |"))
        assert line in done.stdout
        for key in ("rmse", "abs_rel", "d1", "mse_norm"):
            assert f"| {values[f'test/{key}']:.4f} |" in line
        assert line.endswith(f"| {values['export/latency_ms']:.2f} |")

    files = {p.name for p in (tmp_path / "out").iterdir()}
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`depthsweep.kind` = 'parent'")
    assert len(parents) == 2
    for parent in parents:
        # Read from the copy's artifact folder itself (see above for why not list_artifacts here).
        folder = Path(urlparse(parent.info.artifact_uri).path) / "report"
        assert folder.is_relative_to(tmp_path) and {p.name for p in folder.iterdir()} == files
    # The original study is untouched.
    original = MlflowClient(tiny_sweep["uri"])
    for parent in original.search_runs([original.get_experiment_by_name("tiny").experiment_id],
                                       filter_string="tags.`depthsweep.kind` = 'parent'"):
        assert not original.list_artifacts(parent.info.run_id, "report")
    for run in _trial_runs(original, "nyu"):
        assert not any(k.startswith(("test/", "export/")) for k in run.data.metrics)


@pytest.mark.parametrize("case", ["no_folder", "no_sweep_json", "no_study"])
def test_missing_sweep_json_or_study_exits_2_with_one_line(case, tiny_sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = tmp_path / "sweep"
    if case != "no_folder":
        folder.mkdir()
    if case == "no_study":
        record = json.loads((tiny_sweep["dir"] / "sweep.json").read_text())
        record["name"] = "no_such_study"
        (folder / "sweep.json").write_text(json.dumps(record))
    assert main([str(folder), "--no-log"]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and captured.err.startswith("error: ")
    expected = {"no_folder": "no such sweep folder", "no_sweep_json": "no sweep.json",
                "no_study": "no experiment named 'no_such_study'"}[case]
    assert expected in captured.err
    assert not (folder / "report").exists()


def test_pareto_front_keeps_the_points_nothing_beats():
    points = [Point(1, 0.9, "a", "p1"), Point(2, 0.5, "a", "p2"), Point(2, 0.7, "b", "p3"), Point(3, 0.6, "b", "p4"),
              Point(4, 0.2, "b", "p5")]
    assert [p.label for p in pareto_front(points, "min")] == ["p1", "p2", "p5"]
    assert [p.label for p in pareto_front(points, "max")] == ["p1"]


def test_importances_say_why_they_cannot_be_computed():
    study = optuna.create_study()
    for lr, width in ((0.1, 1.0), (0.01, 1.0)):
        study.enqueue_trial({"lr": lr, "width": width})
    study.optimize(lambda t: t.suggest_float("lr", 1e-3, 1.0, log=True) + 0 * t.suggest_float("width", 0.5, 2.0),
                   n_trials=2)
    values, note, n = importances(study)
    assert values is None and n == 2 and "only 2 complete trial(s)" in note
    study.enqueue_trial({"lr": 0.5, "width": 1.0})
    study.optimize(lambda t: t.suggest_float("lr", 1e-3, 1.0, log=True) + 0 * t.suggest_float("width", 0.5, 2.0),
                   n_trials=1)
    values, note, n = importances(study)
    assert values is not None and list(values) == ["lr"] and math.isclose(sum(values.values()), 1.0)
    assert "width" in note


def test_optuna_trials_ray_trials_and_mlflow_runs_are_linked_by_id(tiny_sweep):
    """Each Optuna trial names its Ray trial and MLflow run; each run names its Optuna trial and Ray trial."""
    study = load_study(tiny_sweep["uri"], "tiny")
    storage = f"sqlite:///{tiny_sweep['dir'] / 'optuna.db'}"
    for stage in ("nyu", "diw"):
        runs = {r.run_id: r for r in study.trials[stage]}
        ostudy = optuna.load_study(study_name=f"tiny-{stage}", storage=storage)
        assert len(ostudy.trials) == len(runs)
        for trial in ostudy.trials:
            run = runs[trial.user_attrs["mlflow_run_id"]]
            assert run.tags["ray_trial_id"] == trial.user_attrs["ray_trial_id"]
            assert run.tags["optuna_trial_number"] == str(trial.number)
            assert trial_architecture(trial, stage, study) == run.architecture != "?"


def test_markdown_and_html_blocks():
    blocks = [("h", 1, "title"), ("p", "see `x` & y"), ("table", ["a", "b"], [["1", "2"]]), ("img", "f.png", "f")]
    assert "| 1 | 2 |" in to_markdown(blocks) and "![f](f.png)" in to_markdown(blocks)
    page = to_html(blocks, "t")
    assert "<code>x</code> &amp; y" in page and '<img src="f.png"' in page and "<td>2</td>" in page
