"""What a sweep's runs are called in MLflow and which summary metrics they carry."""

from __future__ import annotations

from sweep.tracking.views import best_epoch_metrics, experiment_note, parent_run_name, trial_number, trial_run_name


def test_a_trial_run_name_carries_architecture_stage_and_number():
    assert trial_run_name("unetpp", "nyu", trial_number(3, "5f3c1_00007")) == "unetpp-nyu-3"
    assert trial_number(None, "5f3c1_00007") == "7"  # no Optuna number: the index in the Ray id
    assert trial_number(None, "odd-id") == "odd-id"


def test_a_parent_run_name_starts_with_its_stage():
    name = parent_run_name("quickstart-20261202-153012", "diw")
    assert name.startswith("diw") and name.endswith("quickstart-20261202-153012")


def test_best_epoch_metrics_take_the_validation_values_only():
    best = best_epoch_metrics({"epoch": 2.0, "train/loss_mean": 0.3, "val/rmse": 0.7, "val/d1": 0.5,
                               "val/flag": True}, epoch=2)
    assert best == {"best/val_rmse": 0.7, "best/val_d1": 0.5, "best/epoch": 2.0}


def test_the_experiment_note_names_each_stage_summary_metric():
    note = experiment_note("s", {"nyu": ("val/rmse", "min"), "diw": ("val/accuracy", "max")})
    assert "`best/val_rmse`" in note and "`best/val_accuracy`" in note
    assert "lower is better" in note and "higher is better" in note
