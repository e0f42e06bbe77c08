"""The disk bound of a run's ``train.out_dir``: the best checkpoint (weights) and the newest (with optimizer state)."""

from __future__ import annotations

from pathlib import Path

import torch

from depthcore.checkpoint import load_checkpoint
from depthcore.config import ExperimentConfig
from depthcore.engine import fit

SLACK = 256 * 1024  # config, metrics history, RNG states and torch.save's zip framing


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def test_out_dir_keeps_the_best_weights_and_the_newest_full_checkpoint(synthetic_root, tmp_path):
    out = tmp_path / "run"
    cfg = ExperimentConfig.from_dict({
        "model": {"name": "lraspp", "args": {"size": "small"}},
        "data": {"nyu_path": str(synthetic_root["nyu_mat"]), "split_file": str(synthetic_root["split_file"]),
                 "size": [32, 32], "batch_size": 4},
        # lr high enough that validation RMSE moves between epochs, so best and newest can differ.
        "optim": {"lr": 1.0e-2, "schedule": "constant"},
        "train": {"epochs": 4, "threads": 1, "out_dir": str(out), "verbose": False, "max_batches_per_epoch": 2},
    })
    seen: list[dict[str, int]] = []
    fit(cfg, report=lambda metrics, _: seen.append(_files(out)))
    assert len(seen) == 4
    best = load_checkpoint(out / "best")
    weights = sum(t.numel() * t.element_size() for t in best["state_dict"].values())
    trainable = sum(t.numel() * t.element_size() for t in best["state_dict"].values() if t.is_floating_point())
    for epoch, files in enumerate(seen, start=1):
        newest = f"checkpoints/epoch_{epoch:04d}/checkpoint.pt"
        assert set(files) == {"best/checkpoint.pt", newest}, files
        # Best: weights only. Newest: weights plus AdamW's two moments per parameter.
        assert files["best/checkpoint.pt"] <= weights + SLACK
        assert files[newest] <= weights + 2 * trainable + SLACK
        assert sum(files.values()) <= 2 * weights + 2 * trainable + 2 * SLACK
    assert best["optimizer"] is None and best["scaler"] is None
    newest_payload = load_checkpoint(out / "checkpoints" / "epoch_0004")
    assert newest_payload["optimizer"] is not None and newest_payload["optimizer"]["state"]
    assert best["epoch"] == best["extra"]["best"]["epoch"]
    # The weights-only best checkpoint still rebuilds the model.
    torch.load(out / "best" / "checkpoint.pt", weights_only=True)
