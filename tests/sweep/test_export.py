"""sweep.export and sweep.select: validation-only selection, exported files equal eager PyTorch, registry."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient
from sweep_fixtures import copy_sweep

from depthcore.models import create_model, model_from_spec
from sweep.export.cli import compare_architectures, main, registered_name
from sweep.export.files import TOLERANCE, relative_difference, write_model_files
from sweep.select import load_study
from sweep.tracking import TAG_ARCHITECTURE, TAG_KIND, TAG_METRIC, TAG_MODE, TAG_PARENT, TAG_STAGE_PARENT

# -- selection: a constructed study in a real MLflow store -----------------------------------


def _child(client, experiment_id, parent_id, architecture, val_history, test_rmse):
    run = client.create_run(experiment_id, tags={TAG_KIND: "trial", TAG_PARENT: parent_id,
                                                 TAG_ARCHITECTURE: architecture, "stage": "nyu"})
    for step, value in enumerate(val_history, start=1):
        client.log_metric(run.info.run_id, "val/rmse", value, step=step)
    client.log_metric(run.info.run_id, "test/rmse", test_rmse)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_selection_uses_the_validation_metric_even_when_test_disagrees(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("constructed", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment_id, tags={TAG_KIND: "parent", TAG_STAGE_PARENT: "nyu",
                                                    TAG_METRIC: "val/rmse", TAG_MODE: "min"}).info.run_id
    # Best validation value 0.50 (epoch 2) but the worst test value; the other run is the test-best.
    val_best = _child(client, experiment_id, parent, "unetpp", [0.9, 0.50, 0.7], test_rmse=2.0)
    _child(client, experiment_id, parent, "unetpp", [0.8, 0.60], test_rmse=0.1)
    lraspp = _child(client, experiment_id, parent, "lraspp", [1.0, 0.95], test_rmse=0.2)
    winners = load_study(uri, "constructed").winners()
    assert winners["nyu"]["unetpp"].run_id == val_best
    assert winners["nyu"]["unetpp"].value == pytest.approx(0.50) and winners["nyu"]["unetpp"].epoch == 2
    assert winners["nyu"]["lraspp"].run_id == lraspp


def test_a_winner_without_its_checkpoint_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("bare", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment_id, tags={TAG_KIND: "parent", TAG_STAGE_PARENT: "nyu"}).info.run_id
    _child(client, experiment_id, parent, "unetpp", [0.9, 0.5], test_rmse=1.0)  # logged no checkpoint
    sweep_dir = tmp_path / "bare"
    sweep_dir.mkdir()
    (sweep_dir / "sweep.json").write_text(json.dumps({"name": "bare", "mlflow_tracking_uri": uri}))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main([str(sweep_dir), "--no-register"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (after MLflow's own lines about the new store)
    assert err.startswith("error: run ") and "no checkpoint artifact" in err


# -- exported files against eager PyTorch ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unetpp_3m", "lraspp_3m"])
def test_torchscript_and_onnx_match_eager_at_the_real_size(name, tmp_path):
    import onnxruntime

    torch.manual_seed(0)
    model = create_model(name).eval()
    config = {"model": dict(model.depthcore_spec), "data": {"size": [200, 200]}, "train": {"stage": "nyu"}}
    checks = write_model_files(model, config, (200, 200), tmp_path, onnx_exporter="torchscript",
                               pytorch_format="torchscript")
    assert max(checks["max_relative_difference"].values()) <= TOLERANCE
    image = torch.rand(2, 3, 200, 200)
    with torch.no_grad():
        expected = model(image)
        scripted = torch.jit.load(str(tmp_path / "model.pt"))
        assert relative_difference(scripted(image), expected) <= TOLERANCE
        rebuilt = model_from_spec(yaml.safe_load((tmp_path / "config.yaml").read_text())["model"])
        rebuilt.load_state_dict(torch.load(tmp_path / "state_dict.pt", weights_only=True))
        assert relative_difference(rebuilt.eval()(image), expected) == 0.0
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # dynamic batch
        x = torch.rand(batch, 3, 200, 200)
        with torch.no_grad():
            eager = model(x)
        out = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
        assert out.shape == (batch, 1, 200, 200) and relative_difference(out, eager) <= TOLERANCE
    # Another size: the TorchScript guard names the expected shape; onnxruntime names the dimensions.
    with pytest.raises(Exception, match=r"\(B, 3, 200, 200\), found \[1, 3, 96, 128\]"):
        scripted(torch.rand(1, 3, 96, 128))
    with pytest.raises(Exception, match=r"(?s)index: 2 Got: 96 Expected: 200.*index: 3 Got: 128 Expected: 200"):
        session.run(None, {"image": np.zeros((1, 3, 96, 128), dtype=np.float32)})


@pytest.mark.slow
def test_dynamo_onnx_exporter_matches_eager(tmp_path):
    import onnxruntime

    model = create_model("lraspp_3m").eval()
    config = {"model": dict(model.depthcore_spec), "data": {"size": [64, 64]}, "train": {"stage": "nyu"}}
    write_model_files(model, config, (64, 64), tmp_path, onnx_exporter="dynamo")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert relative_difference(torch.from_numpy(session.run(None, {"image": x.numpy()})[0]), model(x)) <= TOLERANCE


def test_seed_comparison_calls_a_difference_only_beyond_the_spread():
    def row(arch, values):
        mean = float(np.mean(values))
        return {"stage": "nyu", "architecture": arch, "selection": {"mode": "min"},
                "seeds": {"metric": "test/rmse", "values": values, "mean": mean, "ci95": 0.0}}

    clear = compare_architectures([row("unetpp", [0.50, 0.51, 0.49]), row("lraspp", [0.80, 0.81, 0.79])])
    assert clear["nyu"]["significant"] and clear["nyu"]["better"] == "unetpp"
    noisy = compare_architectures([row("unetpp", [0.5, 0.9, 0.4]), row("lraspp", [0.6, 0.5, 0.8])])
    assert not noisy["nyu"]["significant"]


def test_seed_comparison_takes_the_direction_of_the_compared_metric():
    """A spec selecting on val/d1 compares test/d1, which is maximised: the higher mean is better."""
    def row(arch, values):
        return {"stage": "nyu", "architecture": arch, "selection": {"mode": "max"},
                "seeds": {"metric": "test/d1", "values": values, "mean": float(np.mean(values)), "ci95": 0.0}}

    result = compare_architectures([row("unetpp", [0.50, 0.51, 0.49]), row("lraspp", [0.80, 0.81, 0.79])])
    assert result["nyu"]["mode"] == "max" and result["nyu"]["better"] == "lraspp" and result["nyu"]["significant"]
    # and RMSE, minimised, whatever mode the stage selected with
    rmse = [{**row(a, v), "seeds": {**row(a, v)["seeds"], "metric": "test/rmse"}}
            for a, v in (("unetpp", [0.50, 0.51, 0.49]), ("lraspp", [0.80, 0.81, 0.79]))]
    assert compare_architectures(rmse)["nyu"]["better"] == "unetpp"


def test_failed_trials_are_never_winners_and_table_topk_export_report_agree(tmp_path):
    """One rule for every consumer: the best value belongs to a failed trial, which no selection takes."""
    from sweep.orchestrate import stage1_topk
    from sweep.study import StageOutcome, TrialRecord

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("failing", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment_id, tags={TAG_KIND: "parent", TAG_STAGE_PARENT: "nyu",
                                                    TAG_METRIC: "val/rmse", TAG_MODE: "min"}).info.run_id
    failed = _child(client, experiment_id, parent, "unetpp", [0.9, 0.10], test_rmse=0.1)
    client.set_tag(failed, "depthsweep.trial_state", "failed")
    good = _child(client, experiment_id, parent, "unetpp", [0.8, 0.60], test_rmse=0.5)
    other = _child(client, experiment_id, parent, "lraspp", [1.0, 0.70], test_rmse=0.6)
    for run_id, trial in ((failed, "t_failed"), (good, "t_good"), (other, "t_other")):
        client.set_tag(run_id, "ray_trial_id", trial)
        client.set_tag(run_id, "depthsweep.trial_key", f"failing/nyu/{trial}")
    study = load_study(uri, "failing")
    winners = study.winners()["nyu"]
    assert {a: r.run_id for a, r in winners.items()} == {"unetpp": good, "lraspp": other}
    assert [r.run_id for r in study.top_k("nyu", 1, per_architecture=True)] == [good, other]
    assert [r.run_id for r in study.top_k("nyu", 5, per_architecture=False)] == [good, other]
    # The stage-2 top-k file takes exactly those trials (and their checkpoints from the Ray records).
    records = [TrialRecord(t, {"model": {"name": "unetpp_3m"}}, None, [], f"/ckpt/{t}")
               for t in ("t_failed", "t_good", "t_other")]
    from sweep_fixtures import TINY_SPEC

    from sweep.spec import load_spec

    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(TINY_SPEC)
    spec = load_spec(spec_path, check_files=False)
    rows = stage1_topk(spec, study, "nyu", StageOutcome(records, False, 3), 1, True)
    assert [r["run_id"] for r in rows] == [good, other] and rows[0]["checkpoint"] == "/ckpt/t_good"
    assert rows[0]["model"] == {"name": "unetpp_3m", "args": {}}


# -- the whole export on a copy of the tiny sweep -------------------------------------------


@pytest.fixture(scope="module")
def exported(tiny_sweep, tmp_path_factory):
    """``python -m sweep.export`` on a copy of the tiny sweep (study tiny stays as it is).

    In a fresh process: MLflow caches one artifact repository per run id and process, and the
    copy's runs have the original's ids, so logging from this process would reach the original.
    """
    root = tmp_path_factory.mktemp("export")
    sweep_dir, uri = copy_sweep(tiny_sweep, root)
    out = root / "export"
    client = MlflowClient(uri)
    ended = {r.info.run_id: r.info.end_time for r in client.search_runs(
        [client.get_experiment_by_name("tiny").experiment_id], "tags.`depthsweep.kind` = 'trial'")}
    done = subprocess.run([sys.executable, "-m", "sweep.export", str(sweep_dir), "--out", str(out),
                           "--onnx-exporter", "torchscript"], env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "registered models:/depthsweep-" in done.stdout
    return {"uri": uri, "out": out, "study": load_study(uri, "tiny"), "ended": ended, "sweep_dir": sweep_dir}


@pytest.mark.slow
def test_export_writes_every_file_and_logs_test_metrics(exported):
    client = MlflowClient(exported["uri"])
    listed = json.loads((exported["out"] / "exported.json").read_text())
    winners = exported["study"].winners()
    assert sorted((r["stage"], r["architecture"]) for r in listed) == sorted(
        (stage, arch) for stage, best in winners.items() for arch in best)
    for row in listed:
        folder = exported["out"] / f"{row['architecture']}-{row['stage']}"
        for name in ("model.pt2", "model.onnx", "state_dict.pt", "config.yaml", "metrics.json", "MODEL_CARD.md"):
            assert (folder / name).stat().st_size > 0, name
        info = json.loads((folder / "metrics.json").read_text())
        assert info["run_id"] == winners[row["stage"]][row["architecture"]].run_id
        logged = client.get_run(info["run_id"]).data.metrics
        if row["stage"] == "nyu":
            assert set(info["test"]["nyu"]) >= {"rmse", "abs_rel", "d1", "mse_norm"}
            for key, value in info["test"]["nyu"].items():
                if math.isfinite(value):
                    assert logged[f"test/{key}"] == pytest.approx(value)
        else:
            assert logged["test/accuracy"] == pytest.approx(info["test"]["diw"]["accuracy"])
            assert logged["test/whdr"] == pytest.approx(info["test"]["diw"]["whdr"])
        assert logged["export/latency_ms"] == pytest.approx(info["latency"]["median_ms"]) and info["latency"]["median_ms"] > 0
        card = (folder / "MODEL_CARD.md").read_text()
        assert f"{info['latency']['median_ms']:.1f} ms" in card and "0.032" in card  # latency and the seed's table
        assert f"(B, 3, {info['input_size'][0]}, {info['input_size'][1]})" in card
        assert "Synthetic test split" in card and "NYU Depth V2 test split" not in card  # the tiny sweep is synthetic
        # Export logs to the winner's run without reopening it: the run's end time is the training's.
        assert client.get_run(info["run_id"]).info.end_time == exported["ended"][info["run_id"]]


@pytest.mark.slow
def test_champion_alias_loads_the_exported_model(exported):
    import mlflow.pytorch

    row = json.loads((exported["out"] / "exported.json").read_text())[0]
    folder = exported["out"] / f"{row['architecture']}-{row['stage']}"
    config = yaml.safe_load((folder / "config.yaml").read_text())
    size = config["data"]["size"]
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", exported["uri"])
    try:
        loaded = mlflow.pytorch.load_model(f"models:/{registered_name(row['architecture'], row['stage'])}@champion")
    finally:
        mp.undo()
    scripted = torch.export.load(str(folder / "model.pt2")).module()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        assert relative_difference(scripted(x), loaded(x)) <= TOLERANCE  # a torch.export module: no .eval()


@pytest.mark.slow
def test_export_of_an_unknown_folder_is_one_line_exit_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "sweep.json" in err


@pytest.mark.slow
def test_seed_retraining_gives_a_confidence_interval(exported, tmp_path):
    from sweep.export.seeds import retrain_with_seeds

    folder = exported["out"] / "lraspp-nyu" if (exported["out"] / "lraspp-nyu").is_dir() else exported["out"] / "unetpp-nyu"
    config = yaml.safe_load((folder / "config.yaml").read_text())
    result = retrain_with_seeds(config, 3, tmp_path / "seeds", device="cpu")
    assert result["n"] == 3 and len(result["values"]) == 3 and result["metric"] == "test/rmse"
    assert result["mean"] == pytest.approx(float(np.mean(result["values"])))
    # Student's t with 2 degrees of freedom: 4.303 * s / sqrt(3).
    assert result["ci95"] == pytest.approx(4.3027 * float(np.std(result["values"], ddof=1)) / math.sqrt(3), rel=1e-3)
    assert len(set(result["values"])) > 1  # the seeds really differ
    with pytest.raises(ValueError, match="at least 2"):
        retrain_with_seeds(config, 1, tmp_path / "one")
    # A stage selecting on val/d1: each seed keeps its best-d1 epoch and is compared on test/d1.
    by_d1 = retrain_with_seeds(config, 2, tmp_path / "d1", select_metric="val/d1", device="cpu")
    assert by_d1["metric"] == "test/d1"
    from depthcore.checkpoint import load_checkpoint

    kept = load_checkpoint(tmp_path / "d1" / "seed_1000" / "best")
    assert kept["extra"]["selection"] == {"metric": "val/d1", "mode": "max"}


@pytest.mark.slow
def test_the_registered_version_has_a_signature_the_export_files_and_installable_requirements(
        exported, tmp_path):
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    from sweep.export.loaded import process_wide_stores

    row = json.loads((exported["out"] / "exported.json").read_text())[0]
    name = registered_name(row["architecture"], row["stage"])
    client = MlflowClient(exported["uri"])
    version = client.get_model_version_by_alias(name, "champion")
    # MLflow resolves a models:/ URI through its process-wide tracking and registry URIs.
    with process_wide_stores(exported["uri"]):
        local = download_artifacts(artifact_uri=f"models:/{name}@champion", dst_path=str(tmp_path))
    model = Model.load(local)
    size = yaml.safe_load((exported["out"] / f"{row['architecture']}-{row['stage']}" / "config.yaml").read_text())["data"]["size"]
    assert model.signature.inputs.inputs[0].shape == (-1, 3, *size)
    assert model.signature.outputs.inputs[0].shape == (-1, 1, *size)
    assert model.flavors["pytorch"].get("serialization_format") == "pt2" or any(
        p.name == "model.pt2" for p in (Path(local) / "data").iterdir())
    attached = {p.name for p in (Path(local) / "extra_files").iterdir()}
    assert {"model.onnx", "model.pt2", "MODEL_CARD.md", "config.yaml", "state_dict.pt"} <= attached
    required = (Path(local) / "requirements.txt").read_text().split()
    assert not any(r.startswith("depthsweep") for r in required) and any(r.startswith("torch==") for r in required)
    # Each requirement pins a distribution at the version this environment installed from the
    # package index (through constraints.txt), so the list installs where that index is reachable.
    for line in required:
        name, _, pinned = line.partition("==")
        assert pinned and importlib.metadata.version(name) == pinned, line
    assert version.tags["depthsweep.data_digest"] and version.tags["depthsweep.selection_metric"]


@pytest.mark.slow
def test_a_second_export_of_the_same_winners_keeps_the_champion(exported, tmp_path):
    done = subprocess.run([sys.executable, "-m", "sweep.export", str(exported["sweep_dir"]), "--out", str(tmp_path),
                           "--onnx-exporter", "torchscript", "--stage", "nyu"],
                          env={**os.environ, "MLFLOW_TRACKING_URI": exported["uri"]},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "@champion unchanged" in done.stdout and "does not beat version 1" in done.stdout
    client = MlflowClient(exported["uri"])
    for row in json.loads((tmp_path / "exported.json").read_text()):
        name = registered_name(row["architecture"], row["stage"])
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
