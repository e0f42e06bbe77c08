"""The trivial predictors every model's numbers are shown beside: the numbers to beat.

NYU-style depth, both fitted on the training split only (never on the split they are scored on)
and scored by the same protocol and metric functions as a model (``engine.evaluate_depth``):

- ``constant``: the mean training depth everywhere;
- ``row_prior``: the mean training depth of each image row (rooms seen from standing height are
  near at the bottom and farther up, so this alone explains part of the depth).

DIW-style point pairs, from the pairs' coordinates alone:

- ``upper_farther``: the rule "the upper point is farther" (a pair on one row scores 0.5, what a
  coin flip would);
- ``chance``: 50 %.

A stage-2 (relative depth) model is scored on NYU after per-image median scaling, and so are the
depth baselines beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from depthcore.config import ExperimentConfig
from depthcore.data.pairs import vertical_rule_correct
from depthcore.stages import DEPTH_STAGE, ORDINAL_STAGE, mode_of

DEPTH_BASELINES = ("constant", "row_prior")
ORDINAL_BASELINES = ("upper_farther", "chance")
TITLES = {
    "constant": "constant (mean training depth)",
    "row_prior": "row prior (mean training depth per row)",
    "upper_farther": "rule: upper point is farther",
    "chance": "chance",
}
"""How tables name each baseline."""


class ConstantDepth(nn.Module):
    """Predicts one depth everywhere."""

    def __init__(self, depth: float) -> None:
        super().__init__()
        self.depth = depth

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b, _, h, w = image.shape
        return torch.full((b, 1, h, w), self.depth, device=image.device)


class RowPrior(nn.Module):
    """Predicts, in every column, a fixed depth per image row (resampled to the input's height)."""

    rows: torch.Tensor

    def __init__(self, rows: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("rows", torch.as_tensor(np.asarray(rows, dtype=np.float32)).view(1, 1, -1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b, _, h, w = image.shape
        rows = self.rows
        if rows.shape[2] != h:
            rows = F.interpolate(rows, size=(h, 1), mode="bilinear", align_corners=False)
        return rows.to(image.device).expand(b, 1, h, w)


@dataclass(frozen=True)
class DepthPriors:
    """What the depth baselines learned from the training split."""

    mean: float
    """Mean depth over every valid training pixel (metres)."""
    rows: np.ndarray
    """Mean depth of each row over the valid training pixels, (H,) at the training size; a row without
    a valid pixel takes ``mean``."""
    frames: int
    """Training frames they were fitted on."""

    def models(self) -> dict[str, nn.Module]:
        return {"constant": ConstantDepth(self.mean), "row_prior": RowPrior(self.rows)}


def fit_depth_priors(loader: Any) -> DepthPriors:
    """Fit both depth baselines on the batches of ``loader`` (``depth``, ``valid_mask``: (B, 1, H, W))."""
    total, count, frames = 0.0, 0, 0
    row_total: torch.Tensor | None = None
    row_count: torch.Tensor | None = None
    for batch in loader:
        depth, valid = batch["depth"].double(), batch["valid_mask"].bool()
        masked = torch.where(valid, depth, torch.zeros_like(depth))
        sums, counts = masked.sum(dim=(0, 1, 3)), valid.sum(dim=(0, 1, 3))
        row_total = sums if row_total is None else row_total + sums
        row_count = counts if row_count is None else row_count + counts
        total += float(sums.sum())
        count += int(counts.sum())
        frames += depth.shape[0]
    if row_total is None or row_count is None or count == 0:
        raise ValueError("fit_depth_priors: the training split has no valid depth pixel")
    mean = total / count
    rows = torch.where(row_count > 0, row_total / row_count.clamp(min=1), torch.full_like(row_total, mean))
    return DepthPriors(mean=mean, rows=rows.numpy(), frames=frames)


def train_priors(cfg: ExperimentConfig) -> DepthPriors:
    """The depth baselines fitted on the training split of ``cfg``'s NYU data (no augmentation)."""
    from depthcore.loaders import make_loader, nyu_dataset

    data = nyu_dataset(cfg.replace(data={"augment": False}), "train")
    return fit_depth_priors(make_loader(data, cfg, train=False))


def score_depth_baselines(priors: DepthPriors, loader: Any, device: torch.device, *, full_res: bool,
                          median_scale: bool) -> dict[str, dict[str, float]]:
    """Each depth baseline's metrics on ``loader``, computed exactly as a model's are."""
    from depthcore.engine import evaluate_depth

    return {name: evaluate_depth(model.to(device), loader, device, full_res=full_res, median_scale=median_scale)
            for name, model in priors.models().items()}


def score_ordinal_baselines(dataset: Any) -> dict[str, dict[str, float]]:
    """The DIW rules' accuracy and WHDR on the pairs of a ``DepthInTheWild`` dataset (its subset only)."""
    pairs = [dataset.pairs[int(i)] for i in dataset.indices]
    if not pairs:
        return {name: {"accuracy": float("nan"), "whdr": float("nan")} for name in ORDINAL_BASELINES}
    rule = sum(vertical_rule_correct(p.y_a, p.y_b, p.relation > 0) for p in pairs) / len(pairs)
    return {"upper_farther": {"accuracy": rule, "whdr": 1.0 - rule}, "chance": {"accuracy": 0.5, "whdr": 0.5}}


def best_baseline(baselines: dict[str, dict[str, float]], metric: str) -> tuple[str, float] | None:
    """The baseline with the best value of ``metric`` (its direction from ``stages.mode_of``), or None."""
    scored = [(name, values[metric]) for name, values in baselines.items()
              if metric in values and values[metric] == values[metric]]
    if not scored:
        return None
    pick = max if mode_of(metric) == "max" else min
    return pick(scored, key=lambda item: item[1])


def gain_over(value: float, best: float, metric: str) -> float:
    """How much better ``value`` is than the best baseline's ``best``: for an error, the fraction below it
    (0.3 = 30 % lower); for an accuracy-like metric, the difference (0.1 = 10 points higher)."""
    if mode_of(metric) == "max":
        return value - best
    return 1.0 - value / best if best else float("nan")


def split_baselines(cfg: ExperimentConfig, split: str, device: torch.device | str = "cpu", *,
                    median_scale: bool = False, parts: tuple[str, ...] = (DEPTH_STAGE.name, ORDINAL_STAGE.name)) -> dict[str, Any]:
    """Every baseline of ``cfg``'s data on ``split`` (``val`` or ``test``), scored as ``depthcore.evaluate``
    scores a model there: ``{<depth stage>: {name: metrics}, <ordinal stage>: {name: metrics},
    "train_mean_depth": m, "train_frames": n}``, each of ``parts`` only when the config names that data."""
    from depthcore.loaders import diw_dataset, make_loader, nyu_dataset

    device = torch.device(device)
    result: dict[str, Any] = {}
    if DEPTH_STAGE.name in parts and cfg.data.nyu_path:
        priors = train_priors(cfg)
        full = split == "test"
        data = nyu_dataset(cfg.replace(data={"augment": False}), split, full_res_gt=full)
        loader = make_loader(data, cfg, train=False, batch_size=4 if full else None)
        result[DEPTH_STAGE.name] = score_depth_baselines(priors, loader, device, full_res=full, median_scale=median_scale)
        result["train_mean_depth"], result["train_frames"] = priors.mean, priors.frames
    if ORDINAL_STAGE.name in parts and cfg.data.diw_root and (cfg.data.diw_test_csv if split == "test" else cfg.data.diw_train_csv):
        result[ORDINAL_STAGE.name] = score_ordinal_baselines(diw_dataset(cfg, "test" if split == "test" else "val"))
    return result
