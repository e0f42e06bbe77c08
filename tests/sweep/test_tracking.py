"""The MLflow layer against a real sqlite store: layout, retries, stage links, failure handling."""

from __future__ import annotations

import logging
import pickle
import socket
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from depthcore.checkpoint import save_checkpoint
from depthcore.config import ExperimentConfig
from depthcore.models import count_parameters, create_model
from depthcore.viz import prediction_grid
from sweep.tracking import (
    TAG_KIND,
    TAG_PARENT,
    TAG_STAGE_PARENT,
    TAG_STUDY,
    TAG_TRIAL_KEY,
    TAG_TRIAL_STATE,
    TrackingError,
    TrialTracker,
    default_artifact_root,
    default_tracking_uri,
    ensure_experiment,
    find_trial_run,
    finish_parent,
    finish_trial_run,
    start_parent_run,
)
from sweep.trial_tags import trial_tags

SPEC = {"study": {"name": "toy", "seed": 0}, "space": {"optim/lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2}}}


@pytest.fixture(scope="module")
def store(tmp_path_factory, monkeypatch_module):
    """A sqlite store in a fresh folder: (tracking_uri, root). Creating its tables takes seconds, so once."""
    monkeypatch_module.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path_factory.mktemp("tracking") / "runs"
    return default_tracking_uri(root), root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _config(model: str, tmp: Path, **train) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "model": {"name": model},
        "data": {"nyu_path": str(tmp / "nyu.mat"), "size": [32, 32]},
        "optim": {"lr": 3.0e-4},
        "train": {"epochs": 3, "out_dir": str(tmp / model), **train},
    })


def _fake_trial(tracker: TrialTracker, cfg: ExperimentConfig, tmp: Path, rmse0: float, **tag_args) -> str:
    """What a trial logs: params and tags, three epochs, config, best checkpoint, preview."""
    run_id = tracker.start(cfg.flat(), trial_tags(cfg, **tag_args))
    # What the trial does once fit has built the network (built once per trial).
    tracker.set_tags({"parameter_count": count_parameters(create_model(cfg.model.name))["total"]})
    for epoch in (1, 2, 3):
        metrics = {"epoch": float(epoch), "train/loss_mean": 1.0 / epoch, "val/rmse": rmse0 / epoch * (1 + (epoch == 3)),
                   "val/d1": 0.2 * epoch, "note": "not a number"}
        tracker.log_epoch(metrics, step=epoch)
        if epoch < 3:  # epoch 3 is worse: the best epoch stays 2
            tracker.log_best(metrics, epoch)
    best = tmp / f"{tracker.trial_key}_best"
    best.mkdir()
    torch.save({"weights": torch.zeros(4)}, best / "checkpoint.pt")
    tracker.log_config(cfg)
    tracker.log_best_checkpoint(best)
    depth = torch.rand(2, 1, 16, 16) + 1.0
    tracker.log_preview(prediction_grid(torch.rand(2, 3, 16, 16), depth, depth * 1.1, path=tmp / f"{tracker.trial_key}.png"),
                        epoch=2)
    tracker.finish("completed")
    return run_id


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_sweep_layout_in_mlflow(store, tmp_path):
    uri, root = store
    assert uri == f"sqlite:///{root.resolve() / 'mlflow.db'}"
    experiment_id = ensure_experiment("layout study", uri, default_artifact_root(root))
    assert ensure_experiment("layout study", uri, default_artifact_root(root)) == experiment_id
    parent = start_parent_run(experiment_id, "nyu", "layout study", SPEC, uri, resume=False)
    configs = {"unetpp_3m": _config("unetpp_3m", tmp_path), "lraspp_3m": _config("lraspp_3m", tmp_path)}
    runs = {}
    for i, (name, cfg) in enumerate(configs.items()):
        tracker = TrialTracker(uri, experiment_id, parent, f"trial_{i}")
        runs[name] = _fake_trial(tracker, cfg, tmp_path, rmse0=1.0 + i)
        assert tracker.failures == 0
    finish_parent(parent, {"best/val/rmse": 1.0 / 3, "best_trial": "trial_0", "trials": 2}, uri)

    client = MlflowClient(uri)
    experiments = [e for e in client.search_experiments() if e.name == "layout study"]
    assert [e.experiment_id for e in experiments] == [experiment_id]
    assert Path(experiments[0].artifact_location.removeprefix("file://")) == default_artifact_root(root) / "layout_study"

    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.info.run_name == "nyu stage · layout study"
    note = client.get_experiment(experiment_id).tags["mlflow.note.content"]
    assert "Group by" in note and "`architecture`" in note
    assert {TAG_KIND: "parent", TAG_STAGE_PARENT: "nyu", TAG_STUDY: "layout study"}.items() <= parent_run.data.tags.items()
    assert parent_run.data.metrics["best/val/rmse"] == pytest.approx(1.0 / 3)
    assert parent_run.data.tags["best_trial"] == "trial_0"
    assert {"spec.yaml", "summary.yaml"} <= _artifacts(client, parent)

    children = client.search_runs([experiment_id], f"tags.`{TAG_PARENT}` = '{parent}'")
    assert {r.info.run_id for r in children} == set(runs.values())
    for name, run_id in runs.items():
        run = client.get_run(run_id)
        cfg = configs[name]
        assert run.info.status == "FINISHED"
        assert run.data.params == {k: str(v) for k, v in cfg.flat().items()}
        tags = run.data.tags
        assert tags[TAG_PARENT] == parent and tags[TAG_TRIAL_STATE] == "completed"
        assert tags["architecture"] == name.split("_")[0] and tags["stage"] == "nyu"
        assert tags["encoder"] == {"unetpp_3m": "mobilenet_v2", "lraspp_3m": "mobilenet_v3_large"}[name]
        assert tags["parameter_count"] == str(count_parameters(create_model(name))["total"])
        history = client.get_metric_history(run_id, "val/rmse")
        assert [m.step for m in history] == [1, 2, 3]
        assert [m.value for m in history] == pytest.approx([history[0].value / e * (1 + (e == 3)) for e in (1, 2, 3)])
        assert "note" not in run.data.metrics
        # The table's summary columns hold the best epoch's values, not the last epoch's.
        assert run.data.metrics["best/val_rmse"] == pytest.approx(history[1].value)
        assert run.data.metrics["best/epoch"] == 2
        assert run.data.metrics["val/rmse"] == pytest.approx(history[2].value)
        assert not set(run.data.params) & set(run.data.metrics)  # no name is both
        artifacts = _artifacts(client, run_id)
        assert {"config.yaml", "checkpoint/checkpoint.pt", "preview_val_best.png"} <= artifacts
        images = {a for a in artifacts if a.startswith("images/")}
        assert images and all(a.startswith("images/preview_val+step+2+") for a in images), images
        assert run.info.artifact_uri.startswith((default_artifact_root(root) / "layout_study").as_uri())


def test_a_retried_trial_reuses_its_run(store, tmp_path):
    uri, root = store
    experiment_id = ensure_experiment("retry study", uri, default_artifact_root(root))
    parent = start_parent_run(experiment_id, "nyu", "retry study", SPEC, uri, resume=False)
    cfg = _config("lraspp_3m", tmp_path)
    tags = trial_tags(cfg, parameter_count=123)
    first = TrialTracker(uri, experiment_id, parent, "trial_7")
    run_id = first.start(cfg.flat(), tags)
    first.log_epoch({"val/rmse": 2.0}, step=1)
    first.finish("failed")
    assert MlflowClient(uri).get_run(run_id).info.status == "FAILED"

    # The retry runs in another process: the tracker travels pickled, as Ray sends it.
    retry = pickle.loads(pickle.dumps(TrialTracker(uri, experiment_id, parent, "trial_7")))
    assert retry.start(cfg.flat(), tags) == run_id and retry.resumed
    assert MlflowClient(uri).get_run(run_id).info.status == "RUNNING"
    retry.log_epoch({"val/rmse": 1.5}, step=2)
    retry.finish("stopped_early")
    assert find_trial_run(uri, parent, "trial_7") == run_id
    assert find_trial_run(uri, parent, "trial_8") is None

    client = MlflowClient(uri)
    runs = client.search_runs([experiment_id], f"tags.`{TAG_TRIAL_KEY}` = 'trial_7'")
    assert [r.info.run_id for r in runs] == [run_id]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[TAG_TRIAL_STATE] == "stopped_early"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val/rmse")] == [(1, 2.0), (2, 1.5)]
    # The same key under another parent (another stage) is another trial.
    other_parent = start_parent_run(experiment_id, "diw", "retry study", SPEC, uri, resume=False)
    assert TrialTracker(uri, experiment_id, other_parent, "trial_7").start(cfg.flat(), tags) != run_id


def test_parent_run_is_reused_on_resume_only(store):
    uri, root = store
    experiment_id = ensure_experiment("resume study", uri, default_artifact_root(root))
    first = start_parent_run(experiment_id, "nyu", "resume study", SPEC, uri, resume=False)
    finish_parent(first, {}, uri, status="KILLED")
    resumed = start_parent_run(experiment_id, "nyu", "resume study", {**SPEC, "resumed": True}, uri, resume=True)
    assert resumed == first
    assert MlflowClient(uri).get_run(first).info.status == "RUNNING"
    assert start_parent_run(experiment_id, "diw", "resume study", SPEC, uri, resume=True) != first
    assert start_parent_run(experiment_id, "nyu", "resume study", SPEC, uri, resume=False) != first


def test_stage2_trial_is_linked_to_its_stage1_run(store, tmp_path):
    uri, root = store
    experiment_id = ensure_experiment("two stages", uri, default_artifact_root(root))
    parent1 = start_parent_run(experiment_id, "nyu", "two stages", SPEC, uri, resume=False)
    parent2 = start_parent_run(experiment_id, "diw", "two stages", SPEC, uri, resume=False)
    stage1_cfg = _config("lraspp_3m", tmp_path)
    stage1 = TrialTracker(uri, experiment_id, parent1, "nyu_0")
    stage1_run = stage1.start(stage1_cfg.flat(), trial_tags(stage1_cfg, parameter_count=1))
    stage1.finish("completed")

    # A stage-2 trial config names the stage-1 checkpoint and records its model (from the top-k rows).
    model = create_model("lraspp_3m")
    checkpoint = save_checkpoint(tmp_path / "nyu_0" / "best", model=model, config=stage1_cfg.to_dict(), epoch=3,
                                 metrics={"val/rmse": 0.5})
    stage2_cfg = ExperimentConfig.from_dict({
        "model": {"name": "lraspp_3m"},
        "data": {"diw_root": str(tmp_path), "diw_train_csv": str(tmp_path / "train.csv")},
        "train": {"stage": "diw", "init_checkpoint": str(checkpoint)},
    })
    tags = trial_tags(stage2_cfg, stage1_run_id=stage1_run, parameter_count=count_parameters(model)["total"])
    stage2 = TrialTracker(uri, experiment_id, parent2, "diw_0")
    run_id = stage2.start(stage2_cfg.flat(), tags)
    stage2.finish("completed")

    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["stage1_run_id"] == stage1_run
    assert run.data.tags["stage"] == "diw"
    assert run.data.tags["architecture"] == "lraspp"
    assert run.data.tags["parameter_count"] == str(count_parameters(model)["total"])
    assert run.data.tags[TAG_PARENT] == parent2


def test_tracking_errors_after_start_do_not_stop_training(store, tmp_path, caplog):
    uri, root = store
    experiment_id = ensure_experiment("errors", uri, default_artifact_root(root))
    parent = start_parent_run(experiment_id, "nyu", "errors", SPEC, uri, resume=False)
    tracker = TrialTracker(uri, experiment_id, parent, "trial_0")
    run_id = tracker.start({"optim/lr": 0.1}, {})
    with caplog.at_level(logging.WARNING, logger="sweep.tracking.trial_run"):
        tracker.log_preview(tmp_path / "missing.png", epoch=1)  # no such file
        tracker.log_best_checkpoint(tmp_path / "no_checkpoint")  # no such folder
        tracker.log_epoch({"val rmse?": 1.0}, step=1)  # MLflow refuses the metric name
        tracker.log_epoch({"val/rmse": 1.0}, step=1)  # and the next call still works
        tracker.finish("completed")
    assert tracker.failures == 3
    assert len([r for r in caplog.records if r.name == "sweep.tracking.trial_run"]) == 1  # warned once
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.metrics == {"val/rmse": 1.0} and run.info.status == "FINISHED"
    with pytest.raises(ValueError, match="state must be one of"):
        tracker.finish("done")


def test_the_driver_closes_a_run_its_trial_left_open(store):
    uri, root = store
    experiment_id = ensure_experiment("driver closes", uri, default_artifact_root(root))
    parent = start_parent_run(experiment_id, "nyu", "driver closes", SPEC, uri, resume=False)
    run_id = TrialTracker(uri, experiment_id, parent, "trial_3").start({"optim/lr": 0.1}, {})
    # Ray stopped the trial between epochs: its process never called finish.
    assert finish_trial_run(uri, parent, "trial_3", "stopped_early") == run_id
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[TAG_TRIAL_STATE] == "stopped_early"
    assert finish_trial_run(uri, parent, "never_started", "failed") is None


def test_start_fails_clearly_on_a_wrong_uri(tmp_path):
    port = _closed_port()
    began = time.monotonic()
    with pytest.raises(TrackingError, match=rf"http://127.0.0.1:{port}"):
        TrialTracker(f"http://127.0.0.1:{port}", "1", "abc", "trial_0").start({}, {})
    assert time.monotonic() - began < 15  # no minutes of HTTP retries
    with pytest.raises(TrackingError, match="does not exist"):
        TrialTracker(f"sqlite:///{tmp_path}/absent/mlflow.db", "1", "abc", "t").start({}, {})
    with pytest.raises(TrackingError, match="nosuchscheme"):
        ensure_experiment("x", "nosuchscheme://where", None)


def test_tracker_needs_start_before_logging(store):
    uri, _ = store
    with pytest.raises(RuntimeError, match="start"):
        TrialTracker(uri, "1", "abc", "t").log_epoch({"a": 1.0}, step=1)


def test_default_tracking_uri_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert default_tracking_uri(tmp_path / "unused") == "http://tracking.example:5000"
    assert not (tmp_path / "unused").exists()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert default_tracking_uri(tmp_path / "runs") == f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
    assert (tmp_path / "runs").is_dir()


def _closed_port() -> int:
    """A local TCP port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
