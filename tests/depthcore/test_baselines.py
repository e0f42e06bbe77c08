"""The trivial predictors: fitted on the training split only, scored like a model, shown in every table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from depthcore.baselines import (
    ConstantDepth,
    RowPrior,
    best_baseline,
    fit_depth_priors,
    gain_over,
    score_ordinal_baselines,
    split_baselines,
    train_priors,
)
from depthcore.config import ExperimentConfig
from depthcore.data.diw import DiwPair
from depthcore.loaders import make_loader, nyu_dataset


def _batch(depth: np.ndarray, valid: np.ndarray) -> dict[str, torch.Tensor]:
    return {"depth": torch.tensor(depth, dtype=torch.float32)[:, None],
            "valid_mask": torch.tensor(valid)[:, None]}


def test_priors_on_a_constructed_split():
    # Two frames of 3 rows x 2 columns; the middle row of the second frame is invalid.
    depth = np.array([[[1.0, 1.0], [2.0, 4.0], [3.0, 3.0]],
                      [[3.0, 3.0], [9.0, 9.0], [5.0, 5.0]]])
    valid = np.ones_like(depth, dtype=bool)
    valid[1, 1] = False
    priors = fit_depth_priors([_batch(depth[:1], valid[:1]), _batch(depth[1:], valid[1:])])
    assert priors.frames == 2
    assert priors.mean == pytest.approx((1 + 1 + 2 + 4 + 3 + 3 + 3 + 3 + 5 + 5) / 10)
    assert np.allclose(priors.rows, [2.0, 3.0, 4.0])
    image = torch.zeros(1, 3, 3, 2)
    assert torch.allclose(RowPrior(priors.rows)(image)[0, 0], torch.tensor([[2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]))
    assert torch.allclose(ConstantDepth(priors.mean)(image), torch.full((1, 1, 3, 2), priors.mean))
    # Resampled to another height, the profile keeps its ends' order.
    tall = RowPrior(priors.rows)(torch.zeros(1, 3, 6, 2))[0, 0, :, 0]
    assert tall.shape == (6,) and tall[0] < tall[-1]


def test_a_row_without_valid_pixels_takes_the_mean():
    depth = np.array([[[2.0], [7.0]]])
    priors = fit_depth_priors([_batch(depth, np.array([[[True], [False]]]))])
    assert priors.rows.tolist() == [2.0, 2.0]


def _config(root, split_seed=0) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "data": {"nyu_path": str(root["nyu_mat"]), "split_file": str(root["split_file"]), "size": [24, 32],
                 "diw_root": str(root["diw_root"]), "diw_train_csv": str(root["diw_train_csv"]),
                 "diw_test_csv": str(root["diw_test_csv"]), "val_fraction": 0.25, "split_seed": split_seed},
        "train": {"stage": "nyu"}})


def _frames_mean(cfg: ExperimentConfig, splits: tuple[str, ...]) -> float:
    total, count = 0.0, 0
    for split in splits:
        for batch in make_loader(nyu_dataset(cfg.replace(data={"augment": False}), split), cfg, train=False):
            total += float(batch["depth"][batch["valid_mask"]].double().sum())
            count += int(batch["valid_mask"].sum())
    return total / count


def test_depth_baselines_see_the_training_split_only(synthetic_root):
    cfg = _config(synthetic_root)
    priors = train_priors(cfg)
    train_only = _frames_mean(cfg, ("train",))
    with_held_out = _frames_mean(cfg, ("train", "test"))
    assert abs(train_only - with_held_out) > 1e-3  # the check below can tell the two apart
    assert priors.mean == pytest.approx(train_only, rel=1e-9)
    assert priors.frames == len(nyu_dataset(cfg, "train"))


def test_split_baselines_score_the_held_out_split_with_the_model_metrics(synthetic_root):
    cfg = _config(synthetic_root)
    found = split_baselines(cfg, "test")
    assert set(found["nyu"]) == {"constant", "row_prior"} and set(found["diw"]) == {"upper_farther", "chance"}
    assert {"rmse", "abs_rel", "d1", "mse_norm"} <= set(found["nyu"]["constant"])
    assert found["nyu"]["row_prior"]["rmse"] < found["nyu"]["constant"]["rmse"]
    assert found["diw"]["chance"]["accuracy"] == 0.5


def test_row_prior_stays_clearly_below_the_constant_on_generated_rooms(tmp_path):
    """The rooms stay room-like: depth depends on the image row, so the row prior is a real baseline."""
    from depthcore.data import generate_synthetic

    root = generate_synthetic(tmp_path, num_frames=90, height=48, width=64, diw_train=2, diw_test=2, seed=0,
                              progress=False)
    found = split_baselines(_config(root), "test", parts=("nyu",))["nyu"]
    assert found["row_prior"]["rmse"] <= 0.93 * found["constant"]["rmse"]


def test_vertical_rule_counts_a_pair_on_one_row_as_a_coin_flip():
    class Pairs:
        pairs = [DiwPair("a", 1, 1, 5, 1, +1, 9, 9),   # upper A farther: right
                 DiwPair("a", 1, 1, 5, 1, -1, 9, 9),   # upper A closer: wrong
                 DiwPair("a", 3, 1, 3, 8, +1, 9, 9),   # one row: half
                 DiwPair("a", 7, 1, 2, 1, -1, 9, 9)]   # lower A closer, so upper B farther: right
        indices = np.array([0, 1, 2, 3])

    found = score_ordinal_baselines(Pairs())
    assert found["upper_farther"]["accuracy"] == pytest.approx(2.5 / 4)
    assert found["upper_farther"]["whdr"] == pytest.approx(1.5 / 4)
    Pairs.indices = np.array([0, 3])  # only the dataset's subset counts
    assert score_ordinal_baselines(Pairs())["upper_farther"]["accuracy"] == 1.0


def test_best_baseline_follows_the_metric_direction():
    found = {"constant": {"rmse": 1.4, "d1": 0.4}, "row_prior": {"rmse": 1.3, "d1": 0.3}}
    assert best_baseline(found, "rmse") == ("row_prior", 1.3)
    assert best_baseline(found, "d1") == ("constant", 0.4)
    assert best_baseline({}, "rmse") is None
    assert gain_over(0.91, 1.3, "rmse") == pytest.approx(0.3)
    assert gain_over(0.62, 0.5, "accuracy") == pytest.approx(0.12)
    assert math.isnan(gain_over(1.0, 0.0, "rmse"))
