"""Training losses for metric depth (NYU) and relative depth (DIW).

Every depth loss is ``loss(pred, target, valid_mask) -> scalar``, with tensors of shape
(B, 1, H, W) and a bool mask. Each is computed **per image** over that image's valid
pixels and then averaged over the images that have at least one valid pixel, the same
reduction as the metrics. An epoch mean is therefore exact when the per-batch losses are
weighted by :func:`valid_image_count` (see ``metrics.WeightedMean``), whatever the batch
size or a smaller last batch. A batch without any valid pixel gives 0 (not NaN) and still
back-propagates.

The ranking loss has a different signature, ``ranking_loss(pred, points, relation)``, and
is registered as ``"ranking"``; callers must dispatch on the name.

Helpers here (masked means, min-max normalisation, point gathering, the ordinal sign
convention) are shared with ``depthcore.metrics`` so that a loss and its metric cannot
drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from depthcore._registry import LOSSES

# Smallest depth fed to a logarithm; metres, so far below any real depth.
LOG_EPS = 1e-6

DepthLoss = Callable[[Tensor, Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------- helpers


def check_depth_inputs(pred: Tensor, target: Tensor, valid_mask: Tensor, caller: str) -> None:
    """Raise ValueError unless pred, target and valid_mask are all (B, 1, H, W), mask bool."""
    if pred.dim() != 4 or pred.shape[1] != 1:
        raise ValueError(f"{caller}: pred must have shape (B, 1, H, W), found {tuple(pred.shape)}")
    if target.shape != pred.shape or valid_mask.shape != pred.shape:
        raise ValueError(
            f"{caller}: pred, target and valid_mask must have the same shape (B, 1, H, W), "
            f"found {tuple(pred.shape)}, {tuple(target.shape)}, {tuple(valid_mask.shape)}"
        )
    if valid_mask.dtype != torch.bool:
        raise ValueError(f"{caller}: valid_mask must be a bool tensor, found {valid_mask.dtype}")


def fill_invalid(x: Tensor, valid_mask: Tensor, value: float = 1.0) -> Tensor:
    """Replace pixels outside the mask by a harmless positive constant.

    Garbage (NaN, inf, 0, negative) at invalid pixels would otherwise poison the
    gradient: ``where`` blocks the value but ``0 * NaN`` in backward is still NaN.
    """
    return torch.where(valid_mask, x, torch.full_like(x, value))


def valid_pixel_count(valid_mask: Tensor) -> Tensor:
    """Number of valid pixels per image: (B, 1, H, W) bool -> (B,) long."""
    return valid_mask.flatten(1).sum(dim=1)


def valid_image_count(valid_mask: Tensor) -> int:
    """How many images of the batch have at least one valid pixel (the loss's weight)."""
    return int(valid_mask.flatten(1).any(dim=1).sum())


def masked_mean_per_image(x: Tensor, valid_mask: Tensor) -> Tensor:
    """Mean of x over each image's valid pixels: (B, 1, H, W) -> (B,); 0 for empty images."""
    total = torch.where(valid_mask, x, torch.zeros_like(x)).flatten(1).sum(dim=1)
    return total / valid_pixel_count(valid_mask).clamp_min(1).to(x.dtype)


def mean_over_valid_images(per_image: Tensor, valid_mask: Tensor) -> Tensor:
    """Average a (B,) per-image value over images with at least one valid pixel.

    Images without valid pixels are left out; if none has any, the result is 0, still
    attached to the graph so ``backward()`` works.
    """
    has_valid = valid_mask.flatten(1).any(dim=1)  # (B,)
    n_images = has_valid.sum().clamp_min(1).to(per_image.dtype)
    return (per_image * has_valid.to(per_image.dtype)).sum() / n_images


def safe_sqrt(x: Tensor) -> Tensor:
    """sqrt with 0 (and a zero gradient) for x <= 0, where plain sqrt's gradient is inf."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), 0.0)


def minmax_normalize(x: Tensor, valid_mask: Tensor) -> Tensor:
    """Map each image's valid pixels linearly onto [0, 1]; (B, 1, H, W) -> same shape.

    Differentiable (min/max pass gradients to their arg-pixels). A constant image maps to
    0, so no epsilon is needed and the result is exactly invariant to ``a * x + b``, a > 0.
    Values at invalid pixels are meaningless.
    """
    has_valid = valid_mask.flatten(1).any(dim=1).view(-1, 1, 1, 1)
    inf = torch.full_like(x, float("inf"))
    lo = torch.where(valid_mask, x, inf).amin(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    hi = torch.where(valid_mask, x, -inf).amax(dim=(1, 2, 3), keepdim=True)
    # An empty image has lo = inf, hi = -inf; pin both to 0 so nothing turns into NaN.
    lo = torch.where(has_valid, lo, torch.zeros_like(lo))
    hi = torch.where(has_valid, hi, torch.zeros_like(hi))
    span = hi - lo
    span = torch.where(span > 0, span, torch.ones_like(span))
    return (fill_invalid(x, valid_mask, 0.0) - lo) / span


def gather_points(pred: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """Read the predicted depth at point A and point B of each sample.

    pred: (B, 1, H, W). points: integer (B, 2, 2) = [[y_A, x_A], [y_B, x_B]], 0-based in
    pred's H x W; rows are y, columns are x. Returns (z_A, z_B), each (B,). Raises
    ValueError when a point lies outside pred (e.g. points mapped to another image size).
    """
    if pred.dim() != 4 or pred.shape[1] != 1:
        raise ValueError(f"gather_points: pred must have shape (B, 1, H, W), found {tuple(pred.shape)}")
    batch, _, height, width = pred.shape
    if points.shape != (batch, 2, 2):
        raise ValueError(
            f"gather_points: points must have shape ({batch}, 2, 2) as [[y_A, x_A], [y_B, x_B]], "
            f"found {tuple(points.shape)}"
        )
    if points.dtype.is_floating_point or points.dtype == torch.bool:
        raise ValueError(f"gather_points: points must be an integer tensor, found {points.dtype}")
    ys, xs = points[..., 0], points[..., 1]  # (B, 2) each
    outside = (ys < 0) | (ys >= height) | (xs < 0) | (xs >= width)
    if bool(outside.any()):
        sample = int(outside.any(dim=1).nonzero()[0])
        raise ValueError(
            f"gather_points: sample {sample} has point {points[sample].tolist()} "
            f"([[y_A, x_A], [y_B, x_B]]) outside the prediction of H x W = {height} x {width}; "
            "map the points to the prediction's size (or resize the prediction) first"
        )
    rows = torch.arange(batch, device=pred.device)
    depth = pred[:, 0]  # (B, H, W)
    z_a = depth[rows, ys[:, 0], xs[:, 0]]
    z_b = depth[rows, ys[:, 1], xs[:, 1]]
    return z_a, z_b


def ordinal_margin(z_a: Tensor, z_b: Tensor, relation: Tensor) -> Tensor:
    """The single sign convention for ordinal pairs: r * (z_A - z_B), (B,).

    relation is +1 when A is farther than B and -1 when closer; z is predicted *depth*
    (a model predicting disparity must negate it first). A positive margin is a correct
    pair; the ranking loss pushes the margin up.
    """
    if relation.shape != z_a.shape:
        raise ValueError(
            f"relation must have shape {tuple(z_a.shape)} (one label per sample), found {tuple(relation.shape)}"
        )
    if not bool(((relation == 1) | (relation == -1)).all()):
        found = sorted({int(v) for v in relation.unique().tolist()})
        raise ValueError(f"relation must be +1 (A farther) or -1 (A closer), found values {found}")
    return relation.to(z_a.dtype) * (z_a - z_b)


# ------------------------------------------------------------------------------ losses


@LOSSES.register("mse")
def mse_loss(pred: Tensor, target: Tensor, valid_mask: Tensor) -> Tensor:
    """Mean squared error over valid pixels (per image, then mean over images)."""
    check_depth_inputs(pred, target, valid_mask, "mse_loss")
    p, g = fill_invalid(pred, valid_mask), fill_invalid(target, valid_mask)
    return mean_over_valid_images(masked_mean_per_image((p - g) ** 2, valid_mask), valid_mask)


@LOSSES.register("l1")
def l1_loss(pred: Tensor, target: Tensor, valid_mask: Tensor) -> Tensor:
    """Mean absolute error over valid pixels (per image, then mean over images)."""
    check_depth_inputs(pred, target, valid_mask, "l1_loss")
    p, g = fill_invalid(pred, valid_mask), fill_invalid(target, valid_mask)
    return mean_over_valid_images(masked_mean_per_image((p - g).abs(), valid_mask), valid_mask)


@LOSSES.register("silog")
def silog_loss(
    pred: Tensor,
    target: Tensor,
    valid_mask: Tensor,
    variance_focus: float = 0.85,
    scale: float = 10.0,
) -> Tensor:
    """Scale-invariant log loss (Eigen et al. 2014, in the form BTS/AdaBins train with).

    Per image, with e = ln p - ln g over valid pixels:
    ``scale * sqrt(mean(e^2) - variance_focus * mean(e)^2)``; then the mean over images.
    variance_focus = 1 makes it fully scale-invariant; 0.85 keeps a little absolute-scale
    signal. Predictions are clamped to LOG_EPS before the log (a non-positive prediction
    gets no gradient, so use a positive output activation).
    """
    check_depth_inputs(pred, target, valid_mask, "silog_loss")
    if not 0.0 <= variance_focus <= 1.0:
        raise ValueError(f"silog_loss: variance_focus must be in [0, 1], found {variance_focus}")
    p = fill_invalid(pred, valid_mask).clamp_min(LOG_EPS)
    g = fill_invalid(target, valid_mask).clamp_min(LOG_EPS)
    e = torch.log(p) - torch.log(g)
    mean_sq = masked_mean_per_image(e**2, valid_mask)  # (B,)
    mean = masked_mean_per_image(e, valid_mask)
    per_image = scale * safe_sqrt(mean_sq - variance_focus * mean**2)
    return mean_over_valid_images(per_image, valid_mask)


@LOSSES.register("mse_norm")
def mse_norm_loss(pred: Tensor, target: Tensor, valid_mask: Tensor) -> Tensor:
    """The seed's loss: MSE after min-max normalising pred and target per image to [0, 1].

    Normalisation uses each image's valid pixels only; invariant to a positive scale and a
    shift of the prediction, so it learns relative depth, not metres.
    """
    check_depth_inputs(pred, target, valid_mask, "mse_norm_loss")
    diff = minmax_normalize(pred, valid_mask) - minmax_normalize(target, valid_mask)
    return mean_over_valid_images(masked_mean_per_image(diff**2, valid_mask), valid_mask)


@LOSSES.register("ranking")
def ranking_loss(pred: Tensor, points: Tensor, relation: Tensor) -> Tensor:
    """Chen et al. (DIW) ranking loss, mean over samples of log(1 + exp(-r (z_A - z_B))).

    pred: (B, 1, H, W) predicted depth; points: integer (B, 2, 2) [[y_A, x_A], [y_B, x_B]]
    in pred's H x W; relation: (B,) +1 when A is farther than B, -1 when closer.
    Uses softplus so large margins neither overflow nor lose precision.
    """
    z_a, z_b = gather_points(pred, points)
    return F.softplus(-ordinal_margin(z_a, z_b, relation)).mean()


def get_loss(name: str) -> Callable[..., Tensor]:
    """The registered loss called ``name``; KeyError listing the valid names otherwise.

    Depth losses take (pred, target, valid_mask); ``"ranking"`` takes (pred, points, relation).
    """
    return LOSSES.get(name)


DEPTH_LOSSES: tuple[str, ...] = ("mse", "l1", "silog", "mse_norm")
"""Registered names with the (pred, target, valid_mask) signature."""
