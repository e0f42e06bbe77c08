"""Prediction grids: a real PNG of the documented size whose panels show what they were given."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from depthcore.data import NyuDepthV2
from depthcore.viz import (
    DPI,
    PANEL_INCHES,
    ROW_LABEL_INCHES,
    TITLE_INCHES,
    figure_inches,
    one_per_scene,
    prediction_grid,
    preview_predictions,
)

H, W = 24, 32


def _batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, H, W, generator=g)  # (N, 3, H, W)
    ramp = torch.linspace(1.0, 5.0, W).expand(n, 1, H, W)  # (N, 1, H, W): depth grows to the right
    return images, ramp.clone()


def _panel(png: np.ndarray, row: int, col: int, title: bool = False) -> np.ndarray:
    """RGB pixels of one image panel (inset by 2 px, away from anti-aliased edges)."""
    panel_w = int(round(PANEL_INCHES * DPI))
    panel_h = int(round(PANEL_INCHES * H / W * DPI))
    row_h = int(round((PANEL_INCHES * H / W + ROW_LABEL_INCHES) * DPI))
    top = row * row_h + int(round(ROW_LABEL_INCHES * DPI)) + (int(round(TITLE_INCHES * DPI)) if title else 0)
    return png[top + 2 : top + panel_h - 2, col * panel_w + 2 : (col + 1) * panel_w - 2, :3].astype(int)


def _read(path) -> np.ndarray:
    with Image.open(path) as im:
        im.verify()  # raises on a truncated or corrupt PNG
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("rows, title", [(1, None), (3, "epoch 2")])
def test_grid_is_a_png_of_the_documented_size(tmp_path, rows, title):
    images, depths = _batch(5)
    path = prediction_grid(images, depths, depths * 1.5, torch.ones_like(depths, dtype=torch.bool),
                           path=tmp_path / "sub" / "grid.png", max_rows=rows, title=title)
    assert path.is_file() and path.stat().st_size > 1000
    width_in, height_in = figure_inches(rows, H, W, title is not None)
    with Image.open(path) as im:
        assert im.size == (round(width_in * DPI), round(height_in * DPI))
    pixels = _read(path)
    assert pixels.std() > 10  # not a blank canvas


def test_gt_and_prediction_panels_differ_only_when_the_depths_do(tmp_path):
    images, depths = _batch(2)
    mask = torch.ones_like(depths, dtype=torch.bool)
    same = _read(prediction_grid(images, depths, depths.clone(), mask, path=tmp_path / "same.png"))
    flipped = _read(prediction_grid(images, depths, depths.flip(-1), mask, path=tmp_path / "flip.png"))
    for row in range(2):
        np.testing.assert_array_equal(_panel(same, row, 1), _panel(same, row, 2))
        assert np.abs(_panel(flipped, row, 1) - _panel(flipped, row, 2)).mean() > 20
    # The input panel shows the image, not a depth map.
    assert np.abs(_panel(same, 0, 0) - _panel(same, 0, 1)).mean() > 20


def test_masked_ground_truth_is_grey_and_the_scale_is_shared(tmp_path):
    images, depths = _batch(1)
    mask = torch.ones_like(depths, dtype=torch.bool)
    mask[..., : H // 2, :] = False  # top half of the ground truth has no valid depth
    png = _read(prediction_grid(images, depths, depths.clone(), mask, path=tmp_path / "m.png"))
    gt, pred = _panel(png, 0, 1), _panel(png, 0, 2)
    top, bottom = slice(0, gt.shape[0] // 2 - 4), slice(gt.shape[0] // 2 + 4, None)
    assert (np.abs(gt[top] - 153) <= 2).all()  # matplotlib grey "0.6"
    assert not (np.abs(pred[top] - 153) <= 2).all()  # the prediction is drawn everywhere
    np.testing.assert_array_equal(gt[bottom], pred[bottom])


def test_bad_shapes_name_the_argument(tmp_path):
    images, depths = _batch(2)
    with pytest.raises(ValueError, match="preds"):
        prediction_grid(images, depths, depths[:, :, :10], path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="images"):
        prediction_grid(images[:, :1], depths, depths, path=tmp_path / "x.png")


class _TinyDepth(nn.Module):
    """Image -> positive depth; dropout makes train and eval mode give different outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)
        self.drop = nn.Dropout(0.5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.drop(self.conv(image))) + 1e-3  # (B, 1, H, W)


def test_preview_predicts_the_first_samples_in_eval_mode(synthetic_root, tmp_path):
    torch.manual_seed(0)
    dataset = NyuDepthV2(synthetic_root["nyu_mat"], "val", size=(H, W), split_file=synthetic_root["split_file"])
    model = _TinyDepth().train()
    first = preview_predictions(model, dataset, tmp_path / "a.png", n=2, title="trial 0")
    second = preview_predictions(model, dataset, tmp_path / "b.png", n=2, title="trial 0")
    assert model.training  # the caller's mode is restored
    # Deterministic: the same samples and no dropout, so the same picture.
    np.testing.assert_array_equal(_read(first), _read(second))
    with Image.open(first) as im:
        width_in, height_in = figure_inches(2, H, W, True)
        assert im.size == (round(width_in * DPI), round(height_in * DPI))
    # The input panel of row 0 is the dataset's first image, resampled to the panel.
    sample = dataset[0]["image"].permute(1, 2, 0).numpy() * 255  # (H, W, 3)
    assert abs(_panel(_read(first), 0, 0, title=True).mean() - sample.mean()) < 8


def test_preview_needs_depth_samples(tmp_path):
    with pytest.raises(ValueError, match="depth"):
        preview_predictions(_TinyDepth(), [{"image": torch.rand(3, H, W)}], tmp_path / "x.png")


def test_one_per_scene_spreads_the_preview_over_scenes():
    scenes = ["a"] * 5 + ["b"] * 3 + ["c"] * 4 + ["d"] + ["e"] * 2
    picked = one_per_scene(scenes, 3)
    assert picked == [0, 8, 13]  # first frames of scenes a, c, e
    assert len({scenes[i] for i in picked}) == 3
    assert one_per_scene(["a", "a", "b"], 4) == [0, 2]  # fewer scenes than asked: one frame each
