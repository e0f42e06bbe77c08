"""One test per bug found in the seed's notebooks that concerns losses and metrics.

Bugs 4, 5 and 7 (input scaling, schedule length, ToPILImage overflow) and the coordinate
mapping of bug 3 are data and engine concerns, tested with those modules.
"""

from __future__ import annotations

import math

import pytest
import torch

from depthcore.losses import DEPTH_LOSSES, get_loss, ranking_loss, valid_image_count
from depthcore.metrics import (
    DEPTH_METRIC_KEYS,
    DepthMetricAccumulator,
    OrdinalAccumulator,
    WeightedMean,
    ordinal_accuracy,
)

torch.set_num_threads(1)

N_IMAGES = 10  # batches of 3 leave a partial last batch of 1


def _depth_data(seed: int = 0, height: int = 8, width: int = 12):
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(N_IMAGES, 1, height, width, generator=gen, dtype=torch.float64) * 6 + 0.5
    # Per-image error levels differ a lot, so a wrong average shows.
    spread = torch.linspace(0.05, 0.8, N_IMAGES, dtype=torch.float64).view(-1, 1, 1, 1)
    pred = target * torch.exp(torch.randn(target.shape, generator=gen, dtype=torch.float64) * spread)
    mask = torch.rand(target.shape, generator=gen) > 0.2
    mask[4] = False  # an image without any valid pixel
    return pred, target, mask


def _ordinal_data(seed: int = 0, height: int = 6, width: int = 9):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.randn(N_IMAGES, 1, height, width, generator=gen)
    ys = torch.randint(0, height, (N_IMAGES, 2), generator=gen)
    xs = torch.randint(0, width, (N_IMAGES, 2), generator=gen)
    points = torch.stack([ys, xs], dim=-1)  # (B, 2, 2) as [[y_A, x_A], [y_B, x_B]]
    relation = torch.randint(0, 2, (N_IMAGES,), generator=gen) * 2 - 1
    return pred, points, relation


def _batches(n: int, size: int) -> list[slice]:
    return [slice(start, start + size) for start in range(0, n, size)]


# ------------------------------------------------------------------------------- bug 1


def test_bug1_loss_and_accuracy_share_the_sign_convention() -> None:
    pred, _, _ = _ordinal_data(seed=1)
    i = torch.arange(N_IMAGES)
    # A and B always differ (rows 3 apart in a 6-row image).
    points = torch.stack([torch.stack([i % 6, i % 9], 1), torch.stack([(i + 3) % 6, (i + 4) % 9], 1)], 1)
    pred[i, 0, points[:, 0, 0], points[:, 0, 1]] = 5.0  # A clearly farther than B
    pred[i, 0, points[:, 1, 0], points[:, 1, 1]] = 1.0
    farther = torch.ones(N_IMAGES, dtype=torch.long)

    assert float(ranking_loss(pred, points, farther)) < math.log(2)
    assert ordinal_accuracy(pred, points, farther) == {"accuracy": 1.0, "whdr": 0.0}
    assert float(ranking_loss(pred, points, -farther)) > math.log(2)
    assert ordinal_accuracy(pred, points, -farther) == {"accuracy": 0.0, "whdr": 1.0}


# ------------------------------------------------------------------------------- bug 2


def test_bug2_x_and_y_are_not_swapped() -> None:
    height, width = 6, 10  # non-square, so a swap can also index out of range
    x_ramp = torch.arange(width, dtype=torch.float32).expand(1, 1, height, width).repeat(2, 1, 1, 1)
    y_ramp = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1).expand(2, 1, height, width)
    # Points differ only in x (in the first case) or only in y (in the second); all
    # coordinates are < 6 so a swapped lookup would read a tie, not crash.
    same_row = torch.tensor([[[2, 5], [2, 1]], [[3, 0], [3, 4]]])
    same_column = torch.tensor([[[5, 2], [1, 2]], [[0, 3], [4, 3]]])
    expected = torch.tensor([1, -1])  # A farther in the first pair, closer in the second

    for pred, points in ((x_ramp, same_row), (y_ramp, same_column)):
        assert ordinal_accuracy(pred, points, expected)["accuracy"] == 1.0
        assert ordinal_accuracy(pred, points, -expected)["accuracy"] == 0.0
        assert float(ranking_loss(pred, points, expected)) < math.log(2)
    # A point beyond the short side is fine as a column and wrong as a row.
    wide = torch.tensor([[[1, 9], [1, 0]], [[5, 8], [5, 7]]])
    assert ordinal_accuracy(x_ramp, wide, torch.tensor([1, 1]))["accuracy"] == 1.0


# ------------------------------------------------------------------------------- bug 3


def test_bug3_points_from_a_larger_image_are_refused_not_misread() -> None:
    pred = torch.zeros(1, 1, 200, 200)
    points_224 = torch.tensor([[[223, 100], [10, 10]]])  # mapped to 224 px, pred is 200 px
    relation = torch.tensor([1])
    with pytest.raises(ValueError, match="outside the prediction of H x W = 200 x 200"):
        ranking_loss(pred, points_224, relation)
    with pytest.raises(ValueError, match="outside"):
        ordinal_accuracy(pred, points_224, relation)


# ------------------------------------------------------------------------------- bug 6


@pytest.mark.parametrize("batch_size", [1, 3, N_IMAGES])
def test_bug6_depth_metric_means_do_not_depend_on_batching(batch_size: int) -> None:
    pred, target, mask = _depth_data()
    whole = DepthMetricAccumulator()
    whole.update(pred, target, mask)
    batched = DepthMetricAccumulator()
    for part in _batches(N_IMAGES, batch_size):
        batched.update(pred[part], target[part], mask[part])
    assert batched.count == whole.count == N_IMAGES - 1
    expected = whole.compute()
    got = batched.compute()
    for key in DEPTH_METRIC_KEYS:
        assert got[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), key


def test_bug6_mean_of_batch_means_would_be_caught() -> None:
    """The seed's averaging (mean of batch means) differs here, so the tests above can fail."""
    pred, target, mask = _depth_data()
    expected = DepthMetricAccumulator()
    expected.update(pred, target, mask)
    batch_means = []
    for part in _batches(N_IMAGES, 3):
        acc = DepthMetricAccumulator()
        acc.update(pred[part], target[part], mask[part])
        batch_means.append(acc.compute()["rmse"])
    assert abs(sum(batch_means) / len(batch_means) - expected.compute()["rmse"]) > 1e-3


@pytest.mark.parametrize("name", DEPTH_LOSSES)
@pytest.mark.parametrize("batch_size", [1, 3, N_IMAGES])
def test_bug6_depth_loss_epoch_mean_does_not_depend_on_batching(name: str, batch_size: int) -> None:
    pred, target, mask = _depth_data(seed=2)
    loss_fn = get_loss(name)
    epoch = WeightedMean()
    for part in _batches(N_IMAGES, batch_size):
        epoch.update(loss_fn(pred[part], target[part], mask[part]), weight=valid_image_count(mask[part]))
    assert epoch.count == N_IMAGES - 1
    assert epoch.compute() == pytest.approx(float(loss_fn(pred, target, mask)), rel=1e-12)


@pytest.mark.parametrize("batch_size", [1, 3, N_IMAGES])
def test_bug6_ranking_loss_and_accuracy_do_not_depend_on_batching(batch_size: int) -> None:
    pred, points, relation = _ordinal_data(seed=3)
    epoch_loss, accuracy = WeightedMean(), OrdinalAccumulator()
    for part in _batches(N_IMAGES, batch_size):
        epoch_loss.update(ranking_loss(pred[part], points[part], relation[part]), weight=len(relation[part]))
        accuracy.update(pred[part], points[part], relation[part])
    assert accuracy.count == N_IMAGES
    assert epoch_loss.compute() == pytest.approx(float(ranking_loss(pred, points, relation)), rel=1e-6)
    assert accuracy.compute() == ordinal_accuracy(pred, points, relation)
