"""Tests for depthcore.losses against per-image numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from depthcore._registry import LOSSES
from depthcore.losses import (
    DEPTH_LOSSES,
    gather_points,
    get_loss,
    minmax_normalize,
    ranking_loss,
    valid_image_count,
)

torch.set_num_threads(1)


# ----------------------------------------------------------- numpy references (per image)


def _ref_mse(p: np.ndarray, g: np.ndarray) -> float:
    return float(np.mean((p - g) ** 2))


def _ref_l1(p: np.ndarray, g: np.ndarray) -> float:
    return float(np.mean(np.abs(p - g)))


def _ref_silog(p: np.ndarray, g: np.ndarray) -> float:
    e = np.log(p) - np.log(g)
    return float(10.0 * np.sqrt(np.mean(e**2) - 0.85 * np.mean(e) ** 2))


def _ref_norm(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def _ref_mse_norm(p: np.ndarray, g: np.ndarray) -> float:
    return float(np.mean((_ref_norm(p) - _ref_norm(g)) ** 2))


REFERENCES = {"mse": _ref_mse, "l1": _ref_l1, "silog": _ref_silog, "mse_norm": _ref_mse_norm}


def _reference_loss(name: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Loop over images, keep valid pixels by boolean indexing, then mean over images."""
    per_image = []
    for p, g, m in zip(pred.double().numpy(), target.double().numpy(), mask.numpy(), strict=True):
        if m.any():
            per_image.append(REFERENCES[name](p[m], g[m]))
    return float(np.mean(per_image)) if per_image else 0.0


def _batch(seed: int = 0, batch: int = 4, height: int = 6, width: int = 9):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.rand(batch, 1, height, width, generator=gen) * 4 + 0.5
    target = torch.rand(batch, 1, height, width, generator=gen) * 4 + 0.5
    mask = torch.rand(batch, 1, height, width, generator=gen) > 0.3
    mask[-1] = False  # one image with no valid pixel at all
    return pred, target, mask


def _with_garbage(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    garbage = torch.tensor([float("nan"), float("inf"), -3.0, 0.0, 1e6])
    filler = garbage[torch.arange(x.numel()) % len(garbage)].view_as(x)
    return torch.where(mask, x, filler)


# --------------------------------------------------------------------------- registry


def test_all_losses_are_registered_and_found_by_get_loss() -> None:
    for name in (*DEPTH_LOSSES, "ranking"):
        assert name in LOSSES
        assert get_loss(name) is LOSSES.get(name)
    assert get_loss("ranking") is ranking_loss


def test_unknown_loss_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="mse_norm"):
        get_loss("nope")


# ------------------------------------------------------------------------- depth losses


@pytest.mark.parametrize("name", DEPTH_LOSSES)
def test_depth_loss_matches_per_image_numpy_reference(name: str) -> None:
    pred, target, mask = _batch(seed=1)
    got = get_loss(name)(pred, target, mask)
    assert got.dim() == 0
    assert float(got) == pytest.approx(_reference_loss(name, pred, target, mask), rel=1e-5)


@pytest.mark.parametrize("name", DEPTH_LOSSES)
def test_perfect_prediction_gives_zero_loss(name: str) -> None:
    _, target, mask = _batch(seed=2)
    assert float(get_loss(name)(target.clone(), target, mask)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", DEPTH_LOSSES)
def test_invalid_pixels_are_ignored_with_finite_zero_gradient(name: str) -> None:
    pred, target, mask = _batch(seed=3)
    clean = get_loss(name)(pred, target, mask)
    pred_g = _with_garbage(pred, mask).requires_grad_(True)
    dirty = get_loss(name)(pred_g, _with_garbage(target, mask), mask)
    dirty.backward()
    assert dirty.item() == pytest.approx(clean.item(), rel=1e-6)
    assert torch.isfinite(pred_g.grad).all()
    assert (pred_g.grad[~mask] == 0).all()
    assert pred_g.grad[mask].abs().sum() > 0


@pytest.mark.parametrize("name", DEPTH_LOSSES)
def test_empty_mask_gives_zero_not_nan_and_backpropagates(name: str) -> None:
    pred, target, _ = _batch(seed=4)
    pred.requires_grad_(True)
    loss = get_loss(name)(pred, target, torch.zeros_like(pred, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("name", DEPTH_LOSSES)
def test_gradient_is_finite_at_perfect_prediction(name: str) -> None:
    _, target, mask = _batch(seed=5)
    pred = target.clone().requires_grad_(True)
    get_loss(name)(pred, target, mask).backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("name", DEPTH_LOSSES)
def test_depth_loss_rejects_mismatched_shapes_and_non_bool_mask(name: str) -> None:
    pred, target, mask = _batch()
    with pytest.raises(ValueError, match="same shape"):
        get_loss(name)(pred, target[:, :, :-1], mask)
    with pytest.raises(ValueError, match="bool"):
        get_loss(name)(pred, target, mask.float())


def test_mse_norm_is_invariant_to_scale_and_shift_of_the_prediction() -> None:
    pred, target, mask = _batch(seed=6)
    base = float(get_loss("mse_norm")(pred, target, mask))
    assert base > 0.01
    assert float(get_loss("mse_norm")(3.7 * pred + 2.0, target, mask)) == pytest.approx(base, rel=1e-5)


def test_silog_with_full_variance_focus_is_scale_invariant() -> None:
    from depthcore.losses import silog_loss

    pred, target, mask = _batch(seed=7)
    base = float(silog_loss(pred, target, mask, variance_focus=1.0))
    assert float(silog_loss(5.0 * pred, target, mask, variance_focus=1.0)) == pytest.approx(base, rel=1e-4)
    # The default lambda = 0.85 keeps some sensitivity to absolute scale.
    assert float(silog_loss(5.0 * pred, target, mask)) > float(silog_loss(pred, target, mask))


def test_minmax_normalize_spans_zero_to_one_over_valid_pixels_only() -> None:
    pred, _, mask = _batch(seed=8)
    norm = minmax_normalize(_with_garbage(pred, mask), mask)
    for i in range(pred.shape[0] - 1):  # last image is empty
        assert float(norm[i][mask[i]].min()) == 0.0
        assert float(norm[i][mask[i]].max()) == pytest.approx(1.0)


def test_valid_image_count_skips_empty_images() -> None:
    _, _, mask = _batch(batch=4)
    assert valid_image_count(mask) == 3


# ------------------------------------------------------------------------ ranking loss


def test_gather_points_reads_row_y_column_x() -> None:
    pred = torch.arange(2 * 4 * 7, dtype=torch.float32).view(2, 1, 4, 7)
    points = torch.tensor([[[1, 5], [3, 0]], [[0, 6], [2, 2]]])
    z_a, z_b = gather_points(pred, points)
    assert z_a.tolist() == [1 * 7 + 5, 28 + 0 * 7 + 6]
    assert z_b.tolist() == [3 * 7 + 0, 28 + 2 * 7 + 2]


def test_ranking_loss_matches_hand_computed_value() -> None:
    pred = torch.zeros(3, 1, 4, 4)
    pred[0, 0, 0, 0], pred[1, 0, 1, 1], pred[2, 0, 3, 2] = 2.0, 0.5, 1.0
    points = torch.tensor([[[0, 0], [1, 1]], [[1, 1], [0, 0]], [[3, 2], [3, 3]]])
    relation = torch.tensor([1, -1, -1])
    margins = [1 * (2.0 - 0.0), -1 * (0.5 - 0.0), -1 * (1.0 - 0.0)]
    expected = np.mean([math.log1p(math.exp(-m)) for m in margins])
    assert float(ranking_loss(pred, points, relation)) == pytest.approx(expected, rel=1e-6)


def test_ranking_loss_is_stable_for_large_margins() -> None:
    pred = torch.zeros(2, 1, 2, 2)
    pred[:, 0, 0, 0] = 1e4
    points = torch.tensor([[[0, 0], [1, 1]]] * 2)
    loss = ranking_loss(pred, points, torch.tensor([1, -1]))
    assert float(loss) == pytest.approx(0.5 * 1e4, rel=1e-6)


def test_ranking_loss_gradient_pushes_a_up_when_a_is_farther() -> None:
    pred = torch.zeros(1, 1, 3, 3, requires_grad=True)
    ranking_loss(pred, torch.tensor([[[0, 1], [2, 2]]]), torch.tensor([1])).backward()
    assert float(pred.grad[0, 0, 0, 1]) < 0 < float(pred.grad[0, 0, 2, 2])
    assert int((pred.grad != 0).sum()) == 2


@pytest.mark.parametrize(
    ("points", "relation", "match"),
    [
        (torch.tensor([[[0, 0], [1, 1]]]), torch.tensor([0]), "relation"),
        (torch.tensor([[[0, 0], [1, 1]]]), torch.tensor([1, 1]), "relation"),
        (torch.tensor([[0, 0, 1, 1]]), torch.tensor([1]), r"\(1, 2, 2\)"),
        (torch.tensor([[[0.0, 0.0], [1.0, 1.0]]]), torch.tensor([1]), "integer"),
        (torch.tensor([[[0, 0], [-1, 1]]]), torch.tensor([1]), "outside"),
    ],
)
def test_ranking_loss_rejects_bad_inputs(points: torch.Tensor, relation: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ranking_loss(torch.zeros(1, 1, 3, 3), points, relation)
