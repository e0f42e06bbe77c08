"""``sweep.reconcile`` on stage folders laid out as Ray writes them: a trial Ray ended that Optuna
still holds RUNNING (the driver died between the two writes, or the study's database was down)
is told its end from Ray's records of it."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from sweep.reconcile import reconcile_stage

optuna.logging.set_verbosity(optuna.logging.WARNING)
RESULTS = [(1, 0.9), (2, 0.5), (3, 0.7)]


def _stage(tmp_path, status: str, values=RESULTS):
    stage = tmp_path / "ray" / "nyu"
    folder = stage / "run_trial_t1_1"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text("{}")
    (folder / "result.json").write_text("\n".join(json.dumps(
        {"trial_id": "t1", "epoch": e, "training_iteration": e, "val/rmse": v, "mlflow_run_id": "r1"})
        for e, v in values))
    (stage / "experiment_state-2026-12-06_10-00-00.json").write_text(json.dumps(
        {"trial_data": [[json.dumps({"trial_id": "t1", "status": status}), ""]]}))
    return stage


@pytest.mark.parametrize(("max_epochs", "status", "values", "end", "value"), [
    (3, "TERMINATED", RESULTS, TrialState.COMPLETE, 0.5),  # all its epochs: the best epoch's value
    (5, "TERMINATED", RESULTS, TrialState.PRUNED, 0.7),  # stopped early: Optuna takes the last epoch's value
    (3, "ERROR", RESULTS, TrialState.FAIL, None),
    (3, "TERMINATED", [(1, 0.9), (2, float("nan"))], TrialState.FAIL, None),  # a NaN last epoch
])
def test_a_trial_ray_ended_and_optuna_missed_is_told_its_end_from_rays_results(tmp_path, max_epochs, status, values,
                                                                               end, value):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="s-nyu", storage=storage)
    trial = study.ask()
    trial.set_user_attr("ray_trial_id", "t1")
    trial.report(0.9, 1)  # what Optuna had before it stopped answering
    done = reconcile_stage(_stage(tmp_path, status, values), storage, "s-nyu", f"sqlite:///{tmp_path / 'mlflow.db'}",
                           "s", "s/nyu/", metric="val/rmse", mode="min", max_epochs=max_epochs)
    (told,) = optuna.load_study(study_name="s-nyu", storage=storage).trials
    assert done.optuna_told == {0: end.name} and not done.optuna_failed
    assert told.state == end and told.value == value
    finite = [e for e, v in values if v == v]
    assert sorted(told.intermediate_values) == finite
    assert told.user_attrs["mlflow_run_id"] == "r1"
    if end != TrialState.FAIL:
        assert told.user_attrs["best_value"] == 0.5
