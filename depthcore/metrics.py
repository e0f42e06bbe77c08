"""Evaluation metrics: standard NYU depth metrics and DIW ordinal accuracy.

Depth metrics follow BTS ``compute_errors``: computed **per image** over its valid pixels,
then averaged over images (images without a valid pixel are skipped), in float64. The
accumulators keep every per-image value, so an epoch's result does not depend on how the
images were batched. ``nyu_eval_prepare`` applies the standard NYU protocol (upsample,
depth range, Eigen crop, clipping) before the metrics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from depthcore.losses import (
    check_depth_inputs,
    fill_invalid,
    gather_points,
    masked_mean_per_image,
    minmax_normalize,
    ordinal_margin,
    safe_sqrt,
)
from depthcore.stages import DEPTH_METRIC_KEYS

NYU_SIZE = (480, 640)
EIGEN_CROP = (45, 471, 41, 601)  # rows top:bottom, columns left:right, at 480 x 640


# ------------------------------------------------------------------------ depth metrics


def per_image_depth_metrics(pred: Tensor, target: Tensor, valid_mask: Tensor) -> dict[str, Tensor]:
    """Each metric per image, as float64 tensors of shape (N,), N = images with a valid pixel.

    pred, target: (B, 1, H, W) depths; valid_mask: (B, 1, H, W) bool. Valid predictions
    must be positive (clip them, as ``nyu_eval_prepare`` does); a NaN prediction is let
    through and yields NaN metrics, so a diverged model shows up as such.
    """
    check_depth_inputs(pred, target, valid_mask, "depth_metrics")
    pred, target = pred.detach().to(torch.float64), target.detach().to(torch.float64)
    for name, x in (("prediction", pred), ("ground truth", target)):
        n_bad = int((x[valid_mask] <= 0).sum())
        if n_bad:
            raise ValueError(
                f"depth_metrics: {name} has {n_bad} non-positive values on valid pixels; "
                "clip predictions and mask ground truth (nyu_eval_prepare does both)"
            )
    p, g = fill_invalid(pred, valid_mask), fill_invalid(target, valid_mask)

    def mean(x: Tensor) -> Tensor:
        return masked_mean_per_image(x, valid_mask)

    ratio = torch.maximum(g / p, p / g)
    log_err = torch.log(p) - torch.log(g)
    diff = g - p
    mean_log_err = mean(log_err)
    norm_diff = minmax_normalize(p, valid_mask) - minmax_normalize(g, valid_mask)
    values = {
        "d1": mean((ratio < 1.25).to(p.dtype)),
        "d2": mean((ratio < 1.25**2).to(p.dtype)),
        "d3": mean((ratio < 1.25**3).to(p.dtype)),
        "abs_rel": mean(diff.abs() / g),
        "sq_rel": mean(diff**2 / g),
        "rmse": torch.sqrt(mean(diff**2)),
        "rmse_log": torch.sqrt(mean(log_err**2)),
        "log10": mean((torch.log10(g) - torch.log10(p)).abs()),
        "silog": 100.0 * safe_sqrt(mean(log_err**2) - mean_log_err**2),
        "mse_norm": mean(norm_diff**2),
    }
    has_valid = valid_mask.flatten(1).any(dim=1)  # (B,)
    return {key: values[key][has_valid] for key in DEPTH_METRIC_KEYS}


def _mean_dict(per_image: dict[str, Tensor]) -> dict[str, float]:
    """Mean over images of each metric; NaN for every key when there is no image."""
    return {key: float(values.mean()) if values.numel() else math.nan for key, values in per_image.items()}


def depth_metrics(pred: Tensor, target: Tensor, valid_mask: Tensor) -> dict[str, float]:
    """The standard depth metrics of a batch: keys ``DEPTH_METRIC_KEYS``, mean over images.

    Images with no valid pixel are skipped; if none has one, every value is NaN.
    """
    return _mean_dict(per_image_depth_metrics(pred, target, valid_mask))


class DepthMetricAccumulator:
    """Collects per-image depth metrics over many batches; ``compute()`` is the mean over images."""

    def __init__(self) -> None:
        self._values: dict[str, list[Tensor]] = {key: [] for key in DEPTH_METRIC_KEYS}

    def update(self, pred: Tensor, target: Tensor, valid_mask: Tensor) -> None:
        """Add one batch (same arguments as ``depth_metrics``)."""
        for key, values in per_image_depth_metrics(pred, target, valid_mask).items():
            self._values[key].append(values.cpu())

    @property
    def count(self) -> int:
        """Number of images seen that had at least one valid pixel."""
        return sum(int(v.numel()) for v in self._values["d1"])

    def per_image(self) -> dict[str, Tensor]:
        """Every image's metrics so far, float64 (N,) per key, in the order seen."""
        return {
            key: torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.float64)
            for key, chunks in self._values.items()
        }

    def compute(self) -> dict[str, float]:
        """Mean of each metric over all images seen (NaN for each key before any image)."""
        # One mean over the concatenated values: the same numbers in the same order give
        # the same result whatever the batch sizes were.
        return _mean_dict(self.per_image())


# ------------------------------------------------------------------------ NYU protocol


def _use_eigen_crop(eigen_crop: bool | str, height: int, width: int) -> bool:
    at_nyu_size = (height, width) == NYU_SIZE
    if isinstance(eigen_crop, bool):
        if eigen_crop and not at_nyu_size:
            raise ValueError(
                f"nyu_eval_prepare: eigen_crop=True needs ground truth of 480 x 640, found {height} x {width}"
            )
        return eigen_crop
    if eigen_crop == "auto":
        return at_nyu_size
    raise ValueError(f"nyu_eval_prepare: eigen_crop must be True, False or 'auto', found {eigen_crop!r}")


def _median_scale(pred: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """Multiply each image's prediction by median(gt) / median(pred) over its valid pixels."""
    scaled = pred.clone()
    for i in range(pred.shape[0]):
        valid = mask[i]
        if not bool(valid.any()):
            continue
        pred_median = pred[i][valid].median()
        if not bool(pred_median > 0):
            raise ValueError(
                f"nyu_eval_prepare: median_scale needs a positive median prediction, "
                f"found {float(pred_median)} for image {i}"
            )
        scaled[i] = pred[i] * (gt[i][valid].median() / pred_median)
    return scaled


def nyu_eval_prepare(
    pred: Tensor,
    gt: Tensor,
    valid_mask: Tensor | None = None,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    eigen_crop: bool | str = "auto",
    median_scale: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Apply the standard NYU evaluation protocol; returns float64 (pred, gt, mask).

    pred: (B, 1, h, w), upsampled (bilinear, align_corners=False) to gt's (B, 1, H, W).
    mask = min_depth < gt < max_depth [and valid_mask]; the Eigen crop (rows 45:471,
    columns 41:601) is and-ed into the mask when gt is 480 x 640 (``eigen_crop="auto"``;
    True insists on 480 x 640, False never crops). ``median_scale`` rescales each image's
    prediction to the ground truth's median (for relative-depth models) before the
    prediction is clipped to [min_depth, max_depth]. Feed the result to ``depth_metrics``.
    """
    for name, x in (("pred", pred), ("gt", gt)):
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"nyu_eval_prepare: {name} must have shape (B, 1, H, W), found {tuple(x.shape)}")
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(
            f"nyu_eval_prepare: pred and gt must have the same batch size, found {pred.shape[0]} and {gt.shape[0]}"
        )
    height, width = gt.shape[-2:]
    pred = pred.detach().to(torch.float64)
    gt = gt.detach().to(torch.float64)
    if pred.shape[-2:] != gt.shape[-2:]:
        pred = F.interpolate(pred, size=(height, width), mode="bilinear", align_corners=False)

    mask = (gt > min_depth) & (gt < max_depth)
    if valid_mask is not None:
        if valid_mask.shape != gt.shape:
            raise ValueError(
                f"nyu_eval_prepare: valid_mask must have gt's shape {tuple(gt.shape)}, found {tuple(valid_mask.shape)}"
            )
        mask &= valid_mask.to(device=mask.device, dtype=torch.bool)
    if _use_eigen_crop(eigen_crop, height, width):
        top, bottom, left, right = EIGEN_CROP
        crop = torch.zeros_like(mask)
        crop[..., top:bottom, left:right] = True
        mask &= crop

    if median_scale:
        pred = _median_scale(pred, gt, mask)
    return pred.clamp(min_depth, max_depth), gt, mask


# ---------------------------------------------------------------------- ordinal (DIW)


def ordinal_correct(pred: Tensor, points: Tensor, relation: Tensor) -> Tensor:
    """Per pair, whether the prediction orders A and B as labelled: (B,) bool; ties are wrong."""
    z_a, z_b = gather_points(pred.detach(), points)
    return ordinal_margin(z_a, z_b, relation) > 0


def _ordinal_summary(n_correct: int, n_pairs: int) -> dict[str, float]:
    accuracy = n_correct / n_pairs if n_pairs else math.nan
    return {"accuracy": accuracy, "whdr": 1.0 - accuracy}


def ordinal_accuracy(pred: Tensor, points: Tensor, relation: Tensor) -> dict[str, float]:
    """Ordinal accuracy and WHDR (= 1 - accuracy) of a batch of DIW pairs.

    Same arguments and sign convention as ``losses.ranking_loss``.
    """
    correct = ordinal_correct(pred, points, relation)
    return _ordinal_summary(int(correct.sum()), int(correct.numel()))


class OrdinalAccumulator:
    """Counts correct ordinal pairs over many batches; ``compute()`` gives accuracy and WHDR."""

    def __init__(self) -> None:
        self._correct = 0
        self._pairs = 0

    def update(self, pred: Tensor, points: Tensor, relation: Tensor) -> None:
        correct = ordinal_correct(pred, points, relation)
        self._correct += int(correct.sum())
        self._pairs += int(correct.numel())

    @property
    def count(self) -> int:
        """Number of pairs seen."""
        return self._pairs

    def compute(self) -> dict[str, float]:
        """Accuracy and WHDR over all pairs seen (NaN before any pair)."""
        return _ordinal_summary(self._correct, self._pairs)


# ------------------------------------------------------------------------- epoch means


class WeightedMean:
    """Running mean of per-batch values, each weighted by how many items it averaged.

    For an epoch loss, weight each batch loss by ``losses.valid_image_count(mask)`` (depth
    losses) or the batch size (ranking loss): the result then equals the loss over the
    whole epoch at once, with a smaller last batch counted at its true size.
    """

    def __init__(self) -> None:
        self._total = 0.0
        self._weight = 0.0

    def update(self, value: float | Tensor, weight: float = 1.0) -> None:
        if weight < 0:
            raise ValueError(f"WeightedMean.update: weight must be >= 0, found {weight}")
        if isinstance(value, Tensor):
            value = value.detach().item()
        self._total += float(value) * weight
        self._weight += weight

    @property
    def count(self) -> float:
        """Total weight seen."""
        return self._weight

    def compute(self) -> float:
        """The weighted mean (NaN before any weight)."""
        return self._total / self._weight if self._weight else math.nan
