"""A tiny sweep end to end on a real local Ray runtime, Optuna SQLite storage and MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient
from optuna.trial import TrialState

from sweep.run import main

STATE_OF_TAG = {"completed": TrialState.COMPLETE, "stopped_early": TrialState.PRUNED, "failed": TrialState.FAIL}


@pytest.fixture(scope="module")
def sweep(tiny_sweep):
    return tiny_sweep


def _children(client: MlflowClient, experiment_id: str, stage: str):
    return client.search_runs([experiment_id], filter_string=f"tags.stage = '{stage}'")


pytestmark = pytest.mark.slow


def test_mlflow_records_parents_children_params_metrics_artifacts(sweep):
    client = MlflowClient(sweep["uri"])
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`depthsweep.kind` = 'parent'")
    assert sorted(r.data.tags["depthsweep.stage"] for r in parents) == ["diw", "nyu"]
    parent_of = {r.data.tags["depthsweep.stage"]: r.info.run_id for r in parents}
    nyu, diw = _children(client, experiment.experiment_id, "nyu"), _children(client, experiment.experiment_id, "diw")
    assert len(nyu) == 4 and len(diw) == 2  # exactly one run per trial
    study = optuna.load_study(study_name="tiny-nyu", storage=f"sqlite:///{sweep['dir'] / 'optuna.db'}")
    # Each model's first trial is enqueued before TPE (and its random start-up) takes over.
    assert [t.params["model/name"] for t in study.trials[:2]] == ["unetpp_3m", "lraspp_3m"]
    sampled = sorted(t.params["optim/lr"] for t in study.trials)
    assert sorted(float(r.data.params["optim/lr"]) for r in nyu) == pytest.approx(sampled)
    for run in nyu:
        assert run.data.tags["mlflow.parentRunId"] == parent_of["nyu"]
        assert run.data.tags["architecture"] in ("unetpp", "lraspp")
        assert run.data.params["model/name"] in ("unetpp_3m", "lraspp_3m")
        history = client.get_metric_history(run.info.run_id, "val/rmse")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "config.yaml" in names and "checkpoint" in names
        assert "preview_val_best.png" in names  # at the root: the compare view shows them side by side
        number = run.data.tags["optuna_trial_number"]
        assert run.info.run_name == f"{run.data.tags['architecture']}-nyu-{number}"
        # The summary column is the best epoch's value, the one selection ranks by.
        assert run.data.metrics["best/val_rmse"] == pytest.approx(min(m.value for m in history))
    nyu_ids = {r.info.run_id for r in nyu}
    for run in diw:
        assert run.data.tags["mlflow.parentRunId"] == parent_of["diw"]
        assert run.data.tags["stage1_run_id"] in nyu_ids
        stage1 = client.get_run(run.data.tags["stage1_run_id"])  # the model it fine-tunes, not a default
        assert run.data.params["model/name"] == stage1.data.params["model/name"]
        assert run.data.tags["architecture"] == stage1.data.tags["architecture"]
        assert client.get_metric_history(run.info.run_id, "val/whdr")


def test_optuna_states_match_what_happened(sweep):
    client = MlflowClient(sweep["uri"])
    experiment = client.get_experiment_by_name("tiny")
    runs = {r.data.tags["ray_trial_id"]: r for r in _children(client, experiment.experiment_id, "nyu")}
    study = optuna.load_study(study_name="tiny-nyu", storage=f"sqlite:///{sweep['dir'] / 'optuna.db'}")
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert study.metric_names == ["val/rmse"]
    by_lr = {round(float(r.data.params["optim/lr"]), 12): r for r in runs.values()}
    for trial in study.trials:
        run = by_lr[round(trial.params["optim/lr"], 12)]
        epochs = len(client.get_metric_history(run.info.run_id, "val/rmse"))
        assert STATE_OF_TAG[run.data.tags["depthsweep.trial_state"]] == trial.state
        # PRUNED means ASHA stopped it before the last epoch; COMPLETE ran them all.
        assert (epochs < 2) == (trial.state == TrialState.PRUNED)
        assert trial.value is not None
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))  # the last epoch too
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
    # Stage 2 starts from each architecture's best stage-1 trial (top_k 1 per architecture).
    topk = json.loads((sweep["dir"] / "stage1_topk.json").read_text())
    best: dict[str, float] = {}
    for run in runs.values():
        values = [m.value for m in client.get_metric_history(run.info.run_id, "val/rmse")]
        arch = run.data.tags["architecture"]
        best[arch] = min(best.get(arch, float("inf")), min(values))
    assert sorted(row["architecture"] for row in topk) == sorted(best)
    for row in topk:
        assert row["value"] == pytest.approx(best[row["architecture"]])


def test_dry_run_shows_the_trials_the_sweep_ran_first(sweep, capsys):
    # The enqueued first trials (one per architecture) with their sampled parameters, from the
    # sweep's own sampler and seed: the same configurations the finished sweep started with.
    assert main([str(sweep["spec"]), "--dry-run", "--stage", "nyu"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    study = optuna.load_study(study_name="tiny-nyu", storage=f"sqlite:///{sweep['dir'] / 'optuna.db'}")
    first = sorted(study.trials, key=lambda t: t.number)[:2]
    assert [t.params["model/name"] for t in first] == ["unetpp_3m", "lraspp_3m"]
    for trial, config in zip(first, shown[:2], strict=True):
        assert {k: config[k] for k in trial.params} == pytest.approx(trial.params)


def test_existing_study_without_resume_is_an_error(sweep, capsys):
    assert main([str(sweep["spec"]), "--stage", "nyu"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_device_the_machine_lacks_is_refused_before_compute(sweep, capsys):
    # CUDA asked for on a CPU-only machine: one line, exit 2, no sweep folder, no study.
    args = [str(sweep["spec"]), "--stage", "nyu", "--set", "study.name=again",
            "--set", "stages.nyu.num_samples=2", "--set", "fixed.train/device=cuda"]
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "train/device" in err and "CUDA" in err
    assert not (sweep["root"] / "out" / "again").exists()


def test_validation_errors_exit_2_before_compute(sweep, tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(sweep["spec"].read_text().replace("1.0e-4", "1e-4"))
    assert main([str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "1e-4" in err and "\n" not in err.strip() and Path(spec).name in err
