"""Pictures of predictions: one PNG row per sample, input | ground truth | prediction; and one
depth map drawn pixel for pixel with a colour bar (``write_depth_png``).

Figures are drawn with matplotlib's object API on the Agg canvas (files only, no display,
no pyplot global state), so this works in trial processes sharing a worker and on machines
without a screen. Nothing here knows about experiment tracking:
the sweep logs the returned file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import nn

PANEL_INCHES = 2.4
"""Width of one image panel; its height follows the image's aspect ratio."""
COLORBAR_INCHES = 0.9
"""Extra width on the right of each row for the shared colour bar."""
ROW_LABEL_INCHES = 0.3
"""Height per row for the panel titles."""
TITLE_INCHES = 0.3
"""Height of the figure title, when there is one."""
BOTTOM_INCHES = 0.1
"""Margin under the last row, so the colour bar's lowest tick label is not cut."""
DPI = 100
MASKED_COLOR = "0.6"  # grey: pixels without valid ground truth
DEPTH_CMAP = "magma_r"  # near = bright, far = dark, readable in greyscale too


class Samples(Protocol):
    """Indexable samples with a length: a list of dicts, or a depth Dataset such as ``NyuDepthV2``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


def figure_inches(rows: int, height: int, width: int, title: bool) -> tuple[float, float]:
    """(width, height) in inches of a grid of ``rows`` rows of ``height`` x ``width`` images."""
    panel_h = PANEL_INCHES * height / width
    return 3 * PANEL_INCHES + COLORBAR_INCHES, rows * (panel_h + ROW_LABEL_INCHES) + (TITLE_INCHES if title else 0.0) + BOTTOM_INCHES


def _as_numpy(x: Any, name: str, channels: int | None) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) tensor/array -> float array (N, C, H, W)."""
    if torch.is_tensor(x):
        x = x.detach().float().cpu().numpy()
    array = np.asarray(x)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or (channels is not None and array.shape[1] != channels):
        expected = f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)"
        raise ValueError(f"{name}: expected shape {expected}, found {tuple(array.shape)}")
    return array


def prediction_grid(
    images: Any,
    depths: Any,
    preds: Any,
    valid_masks: Any | None = None,
    *,
    path: str | Path,
    max_rows: int = 4,
    title: str | None = None,
) -> Path:
    """Write a PNG comparing predictions with ground truth and return its path.

    ``images`` (N, 3, H, W) in [0, 1]; ``depths``, ``preds`` and ``valid_masks`` (N, 1, H, W)
    (tensors or arrays; the channel axis may be left out). One row per sample, at most
    ``max_rows``: input | ground truth | prediction. Both depth panels of a row share one
    colour scale (a colour bar in metres on the right), so a wrong scale is visible as a
    brightness change; ground-truth pixels outside the mask are grey.
    """
    images_np = _as_numpy(images, "images", 3)
    depths_np = _as_numpy(depths, "depths", 1)
    preds_np = _as_numpy(preds, "preds", 1)
    masks_np = np.isfinite(depths_np) if valid_masks is None else _as_numpy(valid_masks, "valid_masks", 1) > 0
    if not len(images_np) == len(depths_np) == len(preds_np) == len(masks_np):
        raise ValueError(
            f"prediction_grid: batch sizes differ: images {len(images_np)}, depths {len(depths_np)}, "
            f"preds {len(preds_np)}, valid_masks {len(masks_np)}"
        )
    if depths_np.shape != preds_np.shape or depths_np.shape != masks_np.shape:
        raise ValueError(
            f"prediction_grid: depths {depths_np.shape}, preds {preds_np.shape} and valid_masks "
            f"{masks_np.shape} must have one shape"
        )
    if max_rows < 1:
        raise ValueError(f"max_rows: expected >= 1, found {max_rows}")
    rows = min(len(images_np), max_rows)
    if rows == 0:
        raise ValueError("prediction_grid: no samples to draw")
    height, width = depths_np.shape[-2:]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    fig_w, fig_h = figure_inches(rows, height, width, title is not None)
    # A bare Figure on an Agg canvas, not pyplot: nothing global to switch or to leak.
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI)
    FigureCanvasAgg(fig)
    _draw(fig, images_np[:rows], depths_np[:rows, 0], preds_np[:rows, 0], masks_np[:rows, 0], title)
    # No bbox_inches="tight": the file's pixel size stays figure_inches * DPI.
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _draw(
    fig: Figure,
    images: np.ndarray,  # (R, 3, H, W)
    depths: np.ndarray,  # (R, H, W)
    preds: np.ndarray,  # (R, H, W)
    masks: np.ndarray,  # (R, H, W) bool
    title: str | None,
) -> None:
    fig_w, fig_h = fig.get_size_inches()
    rows = len(images)
    top = TITLE_INCHES if title is not None else 0.0
    row_h = (fig_h - top - BOTTOM_INCHES) / rows
    panel_h = row_h - ROW_LABEL_INCHES
    cmap = matplotlib.colormaps[DEPTH_CMAP].with_extremes(bad=MASKED_COLOR)
    if title is not None:
        fig.suptitle(title, y=1.0 - 0.05 / fig_h, va="top", fontsize=10)

    for r in range(rows):
        bottom = fig_h - top - (r + 1) * row_h
        gt = np.ma.masked_array(depths[r], mask=~masks[r] | ~np.isfinite(depths[r]))
        vmin, vmax = _shared_range(gt.compressed(), preds[r])
        axes = []
        for c, label in enumerate(("input", "ground truth", "prediction")):
            ax = fig.add_axes((c * PANEL_INCHES / fig_w, bottom / fig_h, PANEL_INCHES / fig_w, panel_h / fig_h))
            ax.set_title(label, fontsize=8, pad=2)
            ax.set_axis_off()
            axes.append(ax)
        image = np.clip(images[r].transpose(1, 2, 0), 0.0, 1.0)  # (H, W, 3)
        axes[0].imshow(image, interpolation="nearest", aspect="auto")
        # One colour scale for both depth panels, so a wrong scale shows as a brightness change.
        axes[1].imshow(gt, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto")
        shown = axes[2].imshow(preds[r], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto")
        bar = fig.add_axes(((3 * PANEL_INCHES + 0.1) / fig_w, bottom / fig_h, 0.12 / fig_w, panel_h / fig_h))
        colorbar = fig.colorbar(shown, cax=bar)
        colorbar.set_label("depth (m)", fontsize=7)
        colorbar.ax.tick_params(labelsize=6)


def _shared_range(gt_valid: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """One (vmin, vmax) for a row's ground truth and prediction."""
    values = np.concatenate([gt_valid.ravel(), pred[np.isfinite(pred)].ravel()])
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:  # a constant image would give a zero-width colour scale
        high = low + 1e-3
    return low, high


def one_per_scene(scenes: list[str], n: int) -> list[int]:
    """Up to ``n`` sample indices from different scenes, spread evenly over the scenes in order
    (the first frame of each); with fewer scenes than ``n``, every scene's first frame."""
    firsts: dict[str, int] = {}
    for index, scene in enumerate(scenes):
        firsts.setdefault(scene, index)
    starts = list(firsts.values())
    if len(starts) <= n:
        return starts
    return [starts[round(k * (len(starts) - 1) / max(n - 1, 1))] for k in range(n)]


@torch.no_grad()
def preview_predictions(
    model: nn.Module,
    dataset: Samples,
    path: str | Path,
    n: int = 4,
    device: str | torch.device = "cpu",
    title: str | None = None,
    indices: list[int] | None = None,
) -> Path:
    """Predict ``n`` samples of ``dataset`` and write their ``prediction_grid``.

    The samples at ``indices`` (e.g. ``one_per_scene``), else the first ``n``; fixed, not
    random, so previews of different trials and epochs show the same images. ``device`` is where ``model`` lives (inputs are moved there; the model is
    not). The model runs in eval mode and its previous mode is restored afterwards.
    Samples need ``image``, ``depth`` and ``valid_mask`` (a depth dataset such as NYU).
    """
    chosen = list(indices if indices is not None else range(min(n, len(dataset))))[:n]
    count = len(chosen)
    if count < 1:
        raise ValueError(f"preview_predictions: the dataset is empty or n={n} < 1")
    samples = [dataset[i] for i in chosen]
    missing = [key for key in ("image", "depth", "valid_mask") if key not in samples[0]]
    if missing:
        raise ValueError(f"preview_predictions: samples need keys image, depth, valid_mask; missing {', '.join(missing)}")
    images = torch.stack([s["image"] for s in samples])  # (N, 3, H, W)
    was_training = model.training
    model.eval()
    try:
        preds = model(images.to(device)).float().cpu()  # (N, 1, H, W)
    finally:
        model.train(was_training)
    return prediction_grid(
        images,
        torch.stack([s["depth"] for s in samples]),
        preds,
        torch.stack([s["valid_mask"] for s in samples]),
        path=path,
        max_rows=count,
        title=title,
    )


# -- one depth map with a colour bar (sweep.predict's output) ----------------------------------

# Geometry of write_depth_png, in pixels at scale 1. The depth panel is drawn pixel for pixel at the
# image's resolution; the colour bar, its ticks and its label take a fixed strip on the right.
BAR_STRIP_PX = 130
BAR_GAP_PX = 12
BAR_WIDTH_PX = 16
MIN_HEIGHT_PX = 300
"""Shorter images are centred on a canvas this tall, so the colour-bar label fits."""
TEXT_SCALE_HEIGHT_PX = 600
"""Images taller than this get proportionally larger text and colour bar."""
FONT_SIZE = 10


def figure_pixels(height: int, width: int) -> tuple[int, int]:
    """Size ``(H, W)`` in pixels of the PNG drawn for a depth map of ``height`` x ``width``."""
    scale = _text_scale(height)
    return max(height, round(MIN_HEIGHT_PX * scale)), width + round(BAR_STRIP_PX * scale)


def _text_scale(height: int) -> float:
    return max(1.0, height / TEXT_SCALE_HEIGHT_PX)


def write_depth_png(depth: np.ndarray, path: str | Path, *, label: str, description: str = "") -> Path:
    """Draw ``depth`` (H, W) pixel for pixel with a colour bar labelled ``label``; return the path.

    Near is bright and far is dark (``depthcore.viz.DEPTH_CMAP``), scaled from the map's own
    minimum to maximum. The PNG's ``Description`` text field holds ``description`` (the label
    by default), so the file says what its colours mean.
    """
    depth = np.asarray(depth, dtype=np.float32)
    height, width = depth.shape
    fig_h, fig_w = figure_pixels(height, width)
    scale = _text_scale(height)
    dpi = 100.0 * scale  # fonts are in points: a higher dpi scales the text with the image
    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    bottom = (fig_h - height) // 2
    panel = fig.add_axes((0.0, bottom / fig_h, width / fig_w, height / fig_h))
    panel.set_axis_off()
    finite = depth[np.isfinite(depth)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if not high - low > 1e-6 * max(1.0, abs(high)):
        high = low + max(1e-3, 1e-3 * abs(low))  # a constant map would give a zero-width scale
    norm = Normalize(vmin=low, vmax=high)
    cmap = matplotlib.colormaps[DEPTH_CMAP]
    panel.imshow(depth, cmap=cmap, norm=norm, interpolation="none", aspect="auto", resample=False)
    bar_x = width + BAR_GAP_PX * scale
    bar_h = 0.8 * fig_h
    bar = fig.add_axes((bar_x / fig_w, 0.1, BAR_WIDTH_PX * scale / fig_w, bar_h / fig_h))
    colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=bar)
    colorbar.set_label(label, fontsize=FONT_SIZE)
    colorbar.ax.tick_params(labelsize=FONT_SIZE - 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png", metadata={"Description": description or label})
    return path
