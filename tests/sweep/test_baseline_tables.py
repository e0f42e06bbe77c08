"""Every table that shows a model's numbers shows the baselines' beside them, marked as such."""

from __future__ import annotations

from sweep.export.card import _metrics_table
from sweep.report.cli import main_table
from sweep.summary import format_summary

NYU = {"rmse": 0.9, "abs_rel": 0.25, "d1": 0.6, "mse_norm": 0.04}


def test_end_of_sweep_table_has_baseline_rows_and_the_lead_over_the_best():
    summary = {"nyu": {"lraspp": {"metric": "val/rmse", "trial_id": "t1", "state": "complete", "epoch": 9,
                                  "metrics": {f"val/{k}": v for k, v in NYU.items()}, "run_id": "r1",
                                  "params": {}, "checkpoint": "c"}}}
    baselines = {"nyu": {"constant": {"val/rmse": 1.4, "val/abs_rel": 0.45, "val/d1": 0.4, "val/mse_norm": 0.3},
                         "row_prior": {"val/rmse": 1.2, "val/abs_rel": 0.40, "val/d1": 0.45, "val/mse_norm": 0.15}}}
    text = format_summary(summary, baselines)
    header = next(line for line in text.splitlines() if line.startswith("| architecture"))
    assert "RMSE below the best baseline" in header
    model = next(line for line in text.splitlines() if line.startswith("| lraspp"))
    assert "| 25.0 % |" in model  # 1 - 0.9 / 1.2: the row prior is the better baseline
    assert "| baseline: constant (mean training depth) | – | – | – | 1.4000 | 0.4500 |" in text
    assert "| baseline: row prior (mean training depth per row) |" in text


def test_end_of_sweep_table_for_pairs_shows_points_above_the_rule():
    summary = {"diw": {"unetpp": {"metric": "val/whdr", "trial_id": "t2", "state": "complete", "epoch": 2,
                                  "metrics": {"val/accuracy": 0.8, "val/whdr": 0.2}, "run_id": "r2",
                                  "params": {}, "checkpoint": "c"}}}
    baselines = {"diw": {"upper_farther": {"val/accuracy": 0.52, "val/whdr": 0.48},
                         "chance": {"val/accuracy": 0.5, "val/whdr": 0.5}}}
    text = format_summary(summary, baselines)
    assert "accuracy above the best baseline" in text
    assert "| 28.0 points |" in next(line for line in text.splitlines() if line.startswith("| unetpp"))
    assert "| baseline: rule: upper point is farther | – | – | – | 0.5200 | 0.4800 |" in text


def test_report_table_marks_baseline_rows():
    row = {"architecture": "lraspp", "parameter_count": 3_218_138, "latency_ms": 12.5, "nyu_split": "test",
           "diw_split": "test", **{f"nyu_{k}": v for k, v in NYU.items()}, "diw_accuracy": 0.87, "diw_whdr": 0.13,
           "stage1_diw_accuracy": 0.9}
    baselines = [{"baseline": "constant", "nyu_rmse": 1.5, "nyu_abs_rel": 0.45, "nyu_d1": 0.4, "nyu_mse_norm": 0.3},
                 {"baseline": "row_prior", "nyu_rmse": 1.2, "nyu_abs_rel": 0.4, "nyu_d1": 0.45, "nyu_mse_norm": 0.1},
                 {"baseline": "upper_farther", "diw_accuracy": 0.5, "diw_whdr": 0.5}]
    headers, body = main_table([row], baselines)
    assert "RMSE below the best baseline" in headers
    assert len(body) == 4 and all(len(cells) == len(headers) for cells in body)
    assert body[0][headers.index("RMSE below the best baseline")] == "25.0 %"
    assert body[0][headers.index("DIW accuracy before stage 2 (test)")] == "90.0 %"
    assert body[2][0] == "baseline: row prior (mean training depth per row)"
    assert body[2][headers.index("NYU RMSE (test)")] == "1.2000"
    assert body[3][headers.index("DIW accuracy (test)")] == "50.0 %"
    assert body[3][headers.index("NYU RMSE (test)")] == "–"


def test_model_card_shows_the_baselines_beside_the_model():
    info = {"stage": "nyu", "validation": {"val/rmse": 0.8}, "data": {"synthetic": True},
            "test": {"nyu": {k: 0.5 for k in ("rmse", "abs_rel", "d1")}, "nyu_frames": 10,
                     "diw": {"accuracy": 0.8, "whdr": 0.2}, "diw_pairs": 20},
            "test_baselines": {"nyu": {"constant": {"rmse": 1.0, "abs_rel": 0.4, "d1": 0.3},
                                       "row_prior": {"rmse": 0.8, "abs_rel": 0.35, "d1": 0.35}},
                               "diw": {"upper_farther": {"accuracy": 0.55, "whdr": 0.45},
                                       "chance": {"accuracy": 0.5, "whdr": 0.5}}}}
    table = _metrics_table(info)
    assert "| baseline: constant (mean training depth) | 1.0000 | 0.4000 | 0.3000 |" in table
    assert "RMSE 37.5 % below the best baseline (row prior" in table
    assert "| baseline: rule: upper point is farther | 0.5500 | 0.4500 |" in table
    assert "Accuracy 25.0 points above the best baseline (rule: upper point is farther)" in table
