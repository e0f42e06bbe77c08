"""What ``sweep.tuner.TrueStateOptunaSearch`` reads of Ray's ``OptunaSearch``: fails when upstream changes it."""

from __future__ import annotations

import optuna
from ray.tune.search.optuna import OptunaSearch

from sweep.tuner import TrueStateOptunaSearch


def _space(trial: optuna.Trial) -> None:
    trial.suggest_float("x", 0.0, 1.0)


def test_the_private_optuna_search_attributes_the_true_state_searcher_reads():
    search = OptunaSearch(space=_space, metric="val/rmse", mode="min", sampler=optuna.samplers.RandomSampler(seed=0))
    assert search.suggest("t1") is not None
    assert isinstance(search._ot_trials, dict) and isinstance(search._ot_trials["t1"], optuna.Trial)
    assert isinstance(search._ot_study, optuna.Study)
    assert isinstance(search._completed_trials, set)
    assert search._study_name == "optuna"  # the key of sweep.tuner.STORAGE_LOST


def test_true_state_searcher_links_ids_and_tells_the_best_epoch():
    search = TrueStateOptunaSearch(space=_space, metric="val/rmse", mode="min", max_epochs=3,
                                   sampler=optuna.samplers.RandomSampler(seed=0))
    config = search.suggest("t1")
    assert config is not None and config["optuna_trial"] == 0
    for epoch, value in ((1, 0.9), (2, 0.5), (3, 0.7)):
        search.on_trial_result("t1", {"val/rmse": value, "epoch": epoch, "training_iteration": epoch,
                                      "mlflow_run_id": "run-a"})
    search.on_trial_complete("t1", {"val/rmse": 0.7, "epoch": 3, "mlflow_run_id": "run-a"})
    (trial,) = search._ot_study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.5  # the best epoch, not the last
    assert trial.user_attrs == {"ray_trial_id": "t1", "mlflow_run_id": "run-a", "best_value": 0.5}
    assert sorted(trial.intermediate_values) == [1, 2, 3]


def test_true_state_searcher_maximises_a_maximised_metric():
    search = TrueStateOptunaSearch(space=_space, metric="val/d1", mode="max", max_epochs=2,
                                   sampler=optuna.samplers.RandomSampler(seed=0))
    search.suggest("t1")
    for epoch, value in ((1, 0.8), (2, 0.6)):
        search.on_trial_result("t1", {"val/d1": value, "epoch": epoch, "training_iteration": epoch})
    search.on_trial_complete("t1", {"val/d1": 0.6, "epoch": 2})
    assert search._ot_study.trials[0].value == 0.8


def test_the_study_names_its_metric_and_the_last_epoch_is_an_intermediate_value():
    search = TrueStateOptunaSearch(space=_space, metric="val/rmse", mode="min", max_epochs=3,
                                   sampler=optuna.samplers.RandomSampler(seed=0))
    search.suggest("t1")
    for epoch, value in ((1, 0.9), (2, 0.8)):
        search.on_trial_result("t1", {"val/rmse": value, "epoch": epoch, "training_iteration": epoch})
    # Ray hands a finished trial's last result to on_trial_complete only; it is the best here.
    search.on_trial_complete("t1", {"val/rmse": 0.4, "epoch": 3, "training_iteration": 3})
    assert search._ot_study.metric_names == ["val/rmse"]  # not "Objective 0" in optuna-dashboard
    (trial,) = search._ot_study.trials
    assert trial.intermediate_values == {1: 0.9, 2: 0.8, 3: 0.4}
    assert trial.value == 0.4


def test_a_pruned_trial_keeps_its_best_epoch_beside_optunas_last_value():
    search = TrueStateOptunaSearch(space=_space, metric="val/rmse", mode="min", max_epochs=4,
                                   sampler=optuna.samplers.RandomSampler(seed=0))
    search.suggest("t1")
    search.on_trial_result("t1", {"val/rmse": 0.6, "epoch": 1, "training_iteration": 1})
    # ASHA stops the trial on its second result, which Ray hands only to on_trial_complete.
    search.on_trial_complete("t1", {"val/rmse": 0.8, "epoch": 2, "training_iteration": 2})
    (trial,) = search._ot_study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.value == 0.8  # Optuna's rule for PRUNED: the last intermediate value
    assert trial.user_attrs["best_value"] == 0.6  # what selection ranks it by


def test_a_searcher_whose_database_stops_answering_starts_no_trial_and_raises_nothing(tmp_path, monkeypatch):
    import sqlalchemy.exc

    from sweep.tuner import STORAGE_LOST, ResumableSearchGenerator

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    search = TrueStateOptunaSearch(space=_space, metric="val/rmse", mode="min", max_epochs=3, storage=storage,
                                   study_name="down-nyu", sampler=optuna.samplers.RandomSampler(seed=0))
    assert search.suggest("t1") is not None
    search.on_trial_result("t1", {"val/rmse": 0.9, "epoch": 1, "training_iteration": 1})

    def down(*args, **kwargs):  # the fault: what SQLAlchemy raises when the server went away
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    with monkeypatch.context() as patch:
        for name in ("get_trial", "set_trial_intermediate_value", "set_trial_state_values", "set_trial_user_attr",
                     "create_new_trial"):
            patch.setattr(storage, name, down)
        try:
            search.on_trial_result("t1", {"val/rmse": 0.5, "epoch": 2, "training_iteration": 2})
            search.on_trial_complete("t1", {"val/rmse": 0.7, "epoch": 3, "training_iteration": 3})
            assert search.suggest("t2") == search.FINISHED
            assert "server closed the connection unexpectedly" in STORAGE_LOST["down-nyu"]
        finally:
            STORAGE_LOST.pop("down-nyu", None)
    # Nothing was told while it was down: the trial waits, RUNNING, for sweep.reconcile.
    (trial,) = optuna.load_study(study_name="down-nyu", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.RUNNING and sorted(trial.intermediate_values) == [1]
    # A resumed stage samples again after such a FINISHED; it still ends after num_samples.
    generator = ResumableSearchGenerator(search)
    generator.set_state({"counter": 1, "total_samples": 4, "finished": True, "experiment": None})
    assert not generator.is_finished()
    generator.set_state({"counter": 4, "total_samples": 4, "finished": True, "experiment": None})
    assert generator.is_finished()
