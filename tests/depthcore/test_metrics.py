"""Tests for depthcore.metrics: depth metrics, NYU protocol, ordinal accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depthcore.metrics import (
    DEPTH_METRIC_KEYS,
    EIGEN_CROP,
    DepthMetricAccumulator,
    OrdinalAccumulator,
    WeightedMean,
    depth_metrics,
    nyu_eval_prepare,
    ordinal_accuracy,
    per_image_depth_metrics,
)

torch.set_num_threads(1)


# -------------------------------------------------------- numpy reference (BTS, per image)


def _ref_norm(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def _ref_image_metrics(p: np.ndarray, g: np.ndarray) -> dict[str, float]:
    thresh = np.maximum(g / p, p / g)
    e = np.log(p) - np.log(g)
    return {
        "d1": np.mean(thresh < 1.25),
        "d2": np.mean(thresh < 1.25**2),
        "d3": np.mean(thresh < 1.25**3),
        "abs_rel": np.mean(np.abs(g - p) / g),
        "sq_rel": np.mean((g - p) ** 2 / g),
        "rmse": np.sqrt(np.mean((g - p) ** 2)),
        "rmse_log": np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
        "log10": np.mean(np.abs(np.log10(g) - np.log10(p))),
        "silog": 100 * np.sqrt(np.mean(e**2) - np.mean(e) ** 2),
        "mse_norm": np.mean((_ref_norm(p) - _ref_norm(g)) ** 2),
    }


def _reference(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    rows = [
        _ref_image_metrics(p[m], g[m])
        for p, g, m in zip(pred.double().numpy(), target.double().numpy(), mask.numpy(), strict=True)
        if m.any()
    ]
    return {key: float(np.mean([r[key] for r in rows])) for key in DEPTH_METRIC_KEYS}


def _batch(seed: int = 0, batch: int = 5, height: int = 7, width: int = 11):
    """Predictions near the target so every d-threshold is exercised; last image empty."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, 1, height, width, generator=gen) * 6 + 0.5
    pred = target * torch.exp(torch.randn(batch, 1, height, width, generator=gen) * 0.4)
    mask = torch.rand(batch, 1, height, width, generator=gen) > 0.25
    mask[-1] = False
    return pred, target, mask


# --------------------------------------------------------------------------- depth metrics


@pytest.fixture(scope="module")
def reference_case():
    pred, target, mask = _batch(seed=1)
    return depth_metrics(pred, target, mask), _reference(pred, target, mask)


@pytest.mark.parametrize("key", DEPTH_METRIC_KEYS)
def test_metric_matches_per_image_numpy_reference(reference_case, key: str) -> None:
    got, expected = reference_case
    assert got[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12)


def test_metrics_return_exactly_the_documented_keys_as_floats() -> None:
    got = depth_metrics(*_batch())
    assert tuple(got) == DEPTH_METRIC_KEYS
    assert all(isinstance(v, float) for v in got.values())


def test_per_image_metrics_skip_images_without_valid_pixels() -> None:
    per_image = per_image_depth_metrics(*_batch(batch=5))
    assert all(v.shape == (4,) and v.dtype == torch.float64 for v in per_image.values())


def test_perfect_prediction_gives_ideal_metrics() -> None:
    _, target, mask = _batch(seed=2)
    got = depth_metrics(target.clone(), target, mask)
    assert got["d1"] == got["d2"] == got["d3"] == 1.0
    for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "mse_norm"):
        assert got[key] == pytest.approx(0.0, abs=1e-12), key


@pytest.mark.parametrize(
    ("key", "invariant"), [("silog", True), ("mse_norm", True), ("rmse", False), ("abs_rel", False)]
)
def test_scale_invariance(key: str, invariant: bool) -> None:
    pred, target, mask = _batch(seed=3)
    pred = pred.double()  # so that 3.7 * pred is not rounded to float32
    base, scaled = depth_metrics(pred, target, mask)[key], depth_metrics(3.7 * pred, target, mask)[key]
    assert (scaled == pytest.approx(base, rel=1e-9)) is invariant


def test_invalid_pixels_are_ignored() -> None:
    pred, target, mask = _batch(seed=4)
    garbage = torch.tensor([float("nan"), float("inf"), -2.0, 0.0, 1e9])
    filler = garbage[torch.arange(pred.numel()) % len(garbage)].view_as(pred)
    dirty = depth_metrics(torch.where(mask, pred, filler), torch.where(mask, target, filler.flip(-1)), mask)
    clean = depth_metrics(pred, target, mask)
    assert dirty == pytest.approx(clean, rel=1e-12)


def test_float32_inputs_are_evaluated_in_float64() -> None:
    pred, target, mask = _batch(seed=5)
    assert depth_metrics(pred.float(), target.float(), mask) == pytest.approx(
        _reference(pred.float(), target.float(), mask), rel=1e-12
    )


def test_no_valid_image_gives_nan_for_every_metric() -> None:
    pred, target, mask = _batch()
    got = depth_metrics(pred, target, torch.zeros_like(mask))
    assert set(got) == set(DEPTH_METRIC_KEYS) and all(math.isnan(v) for v in got.values())


def test_non_positive_valid_prediction_raises_a_clear_error() -> None:
    pred, target, mask = _batch()
    pred[0][mask[0]] = 0.0
    with pytest.raises(ValueError, match="non-positive.*nyu_eval_prepare"):
        depth_metrics(pred, target, mask)


def test_accumulator_counts_images_and_matches_depth_metrics() -> None:
    pred, target, mask = _batch(seed=6)
    acc = DepthMetricAccumulator()
    assert acc.count == 0 and math.isnan(acc.compute()["rmse"])
    acc.update(pred, target, mask)
    assert acc.count == 4  # the empty image is skipped
    assert acc.compute() == depth_metrics(pred, target, mask)
    assert acc.per_image()["rmse"].shape == (4,)


# --------------------------------------------------------------------------- NYU protocol


def _nyu_gt(batch: int = 1, height: int = 480, width: int = 640, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, height, width, generator=gen) * 8 + 1.0


def test_prediction_is_upsampled_bilinearly_to_ground_truth_size() -> None:
    gt = _nyu_gt(batch=2, height=48, width=64)
    pred = torch.rand(2, 1, 12, 16) * 5 + 1
    got, gt_out, mask = nyu_eval_prepare(pred, gt)
    assert got.shape == gt.shape == gt_out.shape == mask.shape
    expected = F.interpolate(pred.double(), size=(48, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(got, expected)
    constant, _, _ = nyu_eval_prepare(torch.full((2, 1, 5, 7), 2.5), gt)
    assert torch.allclose(constant, torch.full_like(constant, 2.5))


def test_valid_range_and_given_mask_are_combined() -> None:
    gt = torch.tensor([[[[0.0, 5e-4, 1.0, 9.9, 10.0, 12.0, float("nan"), 3.0]]]])
    given = torch.tensor([[[[True] * 7 + [False]]]])
    _, _, mask = nyu_eval_prepare(torch.ones_like(gt), gt, valid_mask=given)
    assert mask.flatten().tolist() == [False, False, True, True, False, False, False, False]


def test_predictions_are_clipped_to_depth_range() -> None:
    gt = torch.full((1, 1, 2, 2), 5.0)
    pred = torch.tensor([[[[-1.0, 0.0], [50.0, 4.0]]]])
    got, _, _ = nyu_eval_prepare(pred, gt, min_depth=1e-3, max_depth=10.0)
    assert got.flatten().tolist() == [1e-3, 1e-3, 10.0, 4.0]


def test_eigen_crop_is_applied_at_480x640_and_changes_the_result() -> None:
    gt = _nyu_gt()
    pred = gt.clone()
    assert EIGEN_CROP == (45, 471, 41, 601)
    inside = torch.zeros_like(gt, dtype=torch.bool)
    inside[..., 45:471, 41:601] = True
    pred[~inside] *= 3.0  # large errors only outside the crop

    cropped = nyu_eval_prepare(pred, gt)
    assert torch.equal(cropped[2], inside)
    assert int(cropped[2].sum()) == 426 * 560
    assert depth_metrics(*cropped)["rmse"] == pytest.approx(0.0, abs=1e-12)
    uncropped = nyu_eval_prepare(pred, gt, eigen_crop=False)
    assert bool(uncropped[2].all())
    assert depth_metrics(*uncropped)["rmse"] > 1.0


def test_eigen_crop_auto_skips_other_sizes_and_true_refuses_them() -> None:
    gt = _nyu_gt(height=48, width=64)
    _, _, mask = nyu_eval_prepare(gt.clone(), gt)
    assert bool(mask.all())
    with pytest.raises(ValueError, match="480 x 640.*48 x 64"):
        nyu_eval_prepare(gt.clone(), gt, eigen_crop=True)
    with pytest.raises(ValueError, match="eigen_crop"):
        nyu_eval_prepare(gt.clone(), gt, eigen_crop="yes")


def test_median_scaling_recovers_a_scaled_prediction_before_clipping() -> None:
    gt = _nyu_gt(batch=3, height=24, width=32, seed=1).double()
    # Per-image scales, one so large that clipping first would flatten it to max_depth.
    pred = gt * torch.tensor([0.01, 0.37, 40.0]).view(3, 1, 1, 1)
    got, _, mask = nyu_eval_prepare(pred, gt, median_scale=True)
    assert torch.allclose(got[mask], gt[mask], rtol=1e-12)
    assert depth_metrics(got, gt, mask)["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    unscaled, _, _ = nyu_eval_prepare(pred, gt)
    assert depth_metrics(unscaled, gt, mask)["abs_rel"] > 0.5


def test_median_scaling_leaves_an_image_without_valid_pixels_alone() -> None:
    gt = _nyu_gt(batch=2, height=8, width=8).double()
    gt[1] = 20.0  # beyond max_depth: nothing valid
    got, _, mask = nyu_eval_prepare(gt * 2, gt, median_scale=True)
    assert not bool(mask[1].any())
    assert torch.allclose(got[0], gt[0]) and bool((got[1] == 10.0).all())


def test_median_scaling_refuses_a_non_positive_median() -> None:
    gt = _nyu_gt(height=8, width=8)
    with pytest.raises(ValueError, match="median"):
        nyu_eval_prepare(-gt, gt, median_scale=True)


def test_nyu_eval_prepare_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="gt must have shape"):
        nyu_eval_prepare(torch.ones(1, 1, 4, 4), torch.ones(4, 4))
    with pytest.raises(ValueError, match="batch size"):
        nyu_eval_prepare(torch.ones(2, 1, 4, 4), torch.ones(1, 1, 4, 4))


# --------------------------------------------------------------------------- ordinal


@pytest.mark.parametrize(
    ("z_a", "z_b", "relation", "correct"),
    [
        (2.0, 1.0, 1, True),
        (2.0, 1.0, -1, False),
        (1.0, 2.0, -1, True),
        (1.0, 2.0, 1, False),
        (1.5, 1.5, 1, False),  # ties are wrong
        (1.5, 1.5, -1, False),
    ],
)
def test_ordinal_accuracy_table(z_a: float, z_b: float, relation: int, correct: bool) -> None:
    pred = torch.zeros(1, 1, 3, 4)
    pred[0, 0, 0, 3], pred[0, 0, 2, 1] = z_a, z_b
    got = ordinal_accuracy(pred, torch.tensor([[[0, 3], [2, 1]]]), torch.tensor([relation]))
    assert got == {"accuracy": float(correct), "whdr": 1.0 - float(correct)}


def test_ordinal_accumulator_counts_pairs() -> None:
    acc = OrdinalAccumulator()
    assert acc.count == 0 and math.isnan(acc.compute()["accuracy"])
    pred = torch.arange(12.0).view(1, 1, 3, 4).repeat(3, 1, 1, 1)
    points = torch.tensor([[[2, 3], [0, 0]]] * 3)
    acc.update(pred, points, torch.tensor([1, 1, -1]))
    acc.update(pred[:1], points[:1], torch.tensor([-1]))
    assert acc.count == 4
    assert acc.compute() == pytest.approx({"accuracy": 0.5, "whdr": 0.5})


def test_weighted_mean() -> None:
    mean = WeightedMean()
    assert math.isnan(mean.compute())
    mean.update(torch.tensor(2.0), weight=3)
    mean.update(6.0, weight=1)
    assert mean.count == 4 and mean.compute() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="weight"):
        mean.update(1.0, weight=-1)
