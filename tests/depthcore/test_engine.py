"""The training engine on a tiny synthetic dataset: reports, checkpoints, resume, schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from depthcore.checkpoint import load_checkpoint
from depthcore.config import ExperimentConfig, OptimConfig
from depthcore.engine import fit, lr_at, train_one_epoch


def tiny_config(paths, out_dir, **train) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "model": {"name": "lraspp", "args": {"size": "small"}},
        "data": {"nyu_path": str(paths["nyu_mat"]), "split_file": str(paths["split_file"]),
                 "size": [32, 32], "batch_size": 4, "diw_root": str(paths["diw_root"]),
                 "diw_train_csv": str(paths["diw_train_csv"]), "diw_test_csv": str(paths["diw_test_csv"])},
        "optim": {"lr": 1.0e-3},
        "train": {"epochs": 2, "threads": 1, "out_dir": str(out_dir), "verbose": False,
                  "max_batches_per_epoch": 3, **train},
    })


def test_fit_reports_every_epoch_with_checkpoints(synthetic_root, tmp_path):
    calls = []
    result = fit(tiny_config(synthetic_root, tmp_path / "run"), report=lambda m, d: calls.append((dict(m), d)))
    assert [m["epoch"] for m, _ in calls] == [1.0, 2.0]
    for metrics, ckpt_dir in calls:
        for key in ("train/loss_mean", "train/images_per_s", "val/rmse", "val/d1", "val/mse_norm", "lr"):
            assert key in metrics and math.isfinite(metrics[key]), key
        assert ckpt_dir is not None
    payload = load_checkpoint(calls[-1][1])
    assert payload["epoch"] == 2 and payload["model"] == {"name": "lraspp", "args": {"size": "small"}}
    assert payload["metrics"]["val/rmse"] == pytest.approx(calls[-1][0]["val/rmse"])
    assert isinstance(payload["rng"]["torch"], torch.Tensor)
    best = load_checkpoint(result["best_checkpoint"])
    assert best["metrics"]["val/rmse"] == pytest.approx(min(m["val/rmse"] for m, _ in calls))
    # torch's safe loader must accept it (load_checkpoint uses weights_only=True).
    torch.load(tmp_path / "run" / "best" / "checkpoint.pt", weights_only=True)
    assert torch.get_num_threads() == 1


def test_resume_continues_exactly(synthetic_root, tmp_path):
    straight = fit(tiny_config(synthetic_root, tmp_path / "a"))

    class Stop(Exception):
        pass

    def stop_after_first(metrics, ckpt_dir):
        raise Stop

    with pytest.raises(Stop):
        fit(tiny_config(synthetic_root, tmp_path / "b"), report=stop_after_first)
    resumed = fit(tiny_config(synthetic_root, tmp_path / "b"),
                  resume_from=tmp_path / "b" / "checkpoints" / "epoch_0001")
    assert [h["epoch"] for h in resumed["history"]] == [1.0, 2.0]
    assert resumed["metrics"]["val/rmse"] == straight["metrics"]["val/rmse"]
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "epoch_0002")["state_dict"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "epoch_0002")["state_dict"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_checkpoint_without_its_optimizer_state_keeps_the_weights_and_still_resumes(synthetic_root, tmp_path, capsys):
    from depthcore.checkpoint import drop_optimizer_state

    fit(tiny_config(synthetic_root, tmp_path / "a", epochs=1))
    path = tmp_path / "a" / "checkpoints" / "epoch_0001" / "checkpoint.pt"
    full, size = load_checkpoint(path), path.stat().st_size
    assert drop_optimizer_state(path.parent) and not drop_optimizer_state(path)  # once: nothing left the second time
    small = load_checkpoint(path)
    assert small["optimizer"] is None and path.stat().st_size < 0.6 * size  # Adam's two moments gone
    assert all(torch.equal(small["state_dict"][k], v) for k, v in full["state_dict"].items())
    assert {k: small[k] for k in ("epoch", "metrics", "config")} == {k: full[k] for k in ("epoch", "metrics", "config")}
    resumed = fit(tiny_config(synthetic_root, tmp_path / "a"), resume_from=path.parent)
    assert [h["epoch"] for h in resumed["history"]] == [1.0, 2.0]
    assert "no optimizer state in the checkpoint; resuming with a fresh optimizer" in capsys.readouterr().out


def test_diw_stage_finetunes_the_stage1_model(synthetic_root, tmp_path):
    fit(tiny_config(synthetic_root, tmp_path / "s1", epochs=1))
    calls = []
    cfg = tiny_config(synthetic_root, tmp_path / "s2", epochs=1, stage="diw",
                      init_checkpoint=str(tmp_path / "s1" / "best"))
    # The model section is taken from the stage-1 checkpoint, whatever the config says.
    cfg = cfg.replace(model={"name": "unetpp", "args": {}})
    result = fit(cfg, report=lambda m, d: calls.append(m))
    assert 0.0 <= calls[0]["val/whdr"] <= 1.0
    assert calls[0]["val/whdr"] == pytest.approx(1.0 - calls[0]["val/accuracy"])
    assert result["config"]["model"] == {"name": "lraspp", "args": {"size": "small"}}


def test_schedule_spans_the_number_of_batches():
    # Seed bug 5: a one-cycle schedule sized by samples, not batches, never leaves warm-up.
    cfg = OptimConfig(lr=0.1, schedule="onecycle", warmup_fraction=0.1)
    total = 50
    lrs = [lr_at(s, total, cfg) for s in range(total)]
    assert max(lrs) == pytest.approx(0.1)
    assert lrs.index(max(lrs)) == 5
    assert lrs[-1] == pytest.approx(0.1 / 1.0e4)
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:], strict=False))
    assert lr_at(3, total, OptimConfig(lr=0.1, schedule="constant")) == 0.1


def test_fit_ends_the_schedule_on_its_last_batch(synthetic_root, tmp_path):
    result = fit(tiny_config(synthetic_root, tmp_path / "run"))
    assert result["metrics"]["lr"] == pytest.approx(1.0e-3 / 1.0e4)


def test_epoch_loss_is_the_mean_over_samples_seen():
    # Seed bug 6: batches of 4, 4 and 2 samples with losses 1, 2 and 4 average to 20 / 10 = 2.0 over
    # samples; the mean of the batch means would be 2.33, dropping the partial batch 1.5.
    weight = nn.Parameter(torch.zeros(()))
    values = torch.tensor([1.0] * 4 + [2.0] * 4 + [4.0] * 2)
    data = [{"image": torch.zeros(3, 2, 2), "value": v} for v in values]
    loader = DataLoader(data, batch_size=4)
    model = nn.Module()
    model.w = weight
    stats = train_one_epoch(
        model, lambda m, b: b["value"].mean() + 0 * m.w, torch.optim.SGD([weight], lr=0.0), loader,
        device=torch.device("cpu"), scaler=torch.amp.GradScaler("cuda", enabled=False),
        lr_for_step=lambda s: 0.0, first_step=0, max_batches=None, grad_clip=None, amp=False,
        channels_last=False,
    )
    assert stats["train/loss_mean"] == pytest.approx(2.0)


def test_the_best_epoch_follows_the_selection_metric_and_its_direction(synthetic_root, tmp_path):
    """With ``train.select_metric: val/d1`` (maximised) the best epoch is the highest d1, not the lowest."""
    calls = []
    cfg = tiny_config(synthetic_root, tmp_path / "run", epochs=3, select_metric="val/d1")
    result = fit(cfg, report=lambda m, d: calls.append(dict(m)))
    d1 = [m["val/d1"] for m in calls]
    assert result["best_metric"] == "val/d1" and result["best_value"] == pytest.approx(max(d1))
    assert result["best_epoch"] == d1.index(max(d1)) + 1
    best = load_checkpoint(result["best_checkpoint"])
    assert best["extra"]["selection"] == {"metric": "val/d1", "mode": "max"}


def test_select_metric_must_be_one_the_stage_reports():
    from depthcore.config import ConfigError

    with pytest.raises(ConfigError, match="train.select_metric: expected one of val/accuracy, val/whdr for stage diw"):
        ExperimentConfig.from_dict({"data": {"diw_root": "x", "diw_train_csv": "y"},
                                    "train": {"stage": "diw", "init_checkpoint": "c", "select_metric": "val/rmse"}})
