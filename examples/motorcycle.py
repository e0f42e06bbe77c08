"""Predict depth for a real photograph with measured depth and compare: the Middlebury 2014 Motorcycle.

    python examples/motorcycle.py --model runs/sweeps/<study>/export/<arch>-nyu

scikit-image ships the scene (``skimage.data.stereo_motorcycle``: the left image of a
rectified stereo pair and its ground-truth disparity, both downsampled 4x to 500 x 741), so
this runs offline; install it with ``pip install -e '.[examples]'``. The script saves the
left image as a PNG, predicts its depth with ``sweep.predict`` (what ``python -m sweep.predict
--model SRC motorcycle_left.png --npy`` does), converts the disparity to depth
and writes a figure ``image | ground-truth depth | prediction`` (default
``docs/img/motorcycle_prediction.png``) with the standard depth metrics in its title.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from depthcore.metrics import depth_metrics
from depthcore.viz import DEPTH_CMAP
from sweep.predict import PredictError, load_exported, predict_images

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FIGURE = ROOT / "docs" / "img" / "motorcycle_prediction.png"

# Calibration of the downsampled pair, as scikit-image documents it for stereo_motorcycle():
# the Middlebury calib.txt values (f = 3979.911 px, doffs = 124.343 px at full size) divided by 4.
FOCAL_PX = 994.978
BASELINE_MM = 193.001
DOFFS_PX = 31.086
"""Difference of the two cameras' principal points (x); Middlebury disparities exclude it."""


def disparity_to_depth(disparity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth in metres, Z = f * B / (d + doffs), and the mask of pixels with a measured disparity."""
    valid = np.isfinite(disparity) & (disparity > 0)
    depth = np.zeros_like(disparity, dtype=np.float32)
    depth[valid] = FOCAL_PX * BASELINE_MM / (disparity[valid] + DOFFS_PX) / 1000.0
    return depth, valid


def metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    def batch(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x))[None, None]

    return depth_metrics(batch(pred.astype(np.float64)), batch(gt.astype(np.float64)), batch(valid))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="export folder or MLflow URI, as for python -m sweep.predict")
    p.add_argument("--out", type=Path, default=DEFAULT_FIGURE, help=f"figure path (default: {DEFAULT_FIGURE.relative_to(ROOT)})")
    p.add_argument("--work", type=Path, help="folder for the left image and the prediction (default: a temporary one)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI, for a models:/ or runs:/ --model")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from skimage.data import stereo_motorcycle
    except ImportError:
        print("error: this example needs scikit-image: pip install -e '.[examples]'", file=sys.stderr)
        return 2
    left, _, disparity = stereo_motorcycle()
    gt, valid = disparity_to_depth(disparity)

    try:
        exported = load_exported(args.model, tracking_uri=args.tracking_uri)
    except PredictError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stage, name = exported.stage, exported.name
    with tempfile.TemporaryDirectory(prefix="motorcycle-") as tmp:
        work = args.work or Path(tmp)
        image_path = work / "motorcycle_left.png"
        work.mkdir(parents=True, exist_ok=True)
        Image.fromarray(left).save(image_path)
        result = predict_images(exported, [image_path], work, npy=True, device=args.device)
        if result.failures:
            print(f"error: {result.failures[0].reason}", file=sys.stderr)
            return 1
        pred = np.load(work / "motorcycle_left_depth.npy")

    scaled = pred * (np.median(gt[valid]) / np.median(pred[valid]))
    scaled_metrics = metrics(scaled, gt, valid)
    summary = (f"median-scaled: AbsRel {scaled_metrics['abs_rel']:.3f}, RMSE {scaled_metrics['rmse']:.2f} m, "
               f"d1 {scaled_metrics['d1']:.2f}")
    if stage == "nyu":
        raw = metrics(pred, gt, valid)
        summary = f"metric: AbsRel {raw['abs_rel']:.3f}, RMSE {raw['rmse']:.2f} m, d1 {raw['d1']:.2f};  " + summary
    # The yardstick: one constant depth everywhere (the ground truth's median, as median scaling uses).
    constant = metrics(np.full_like(gt, np.median(gt[valid])), gt, valid)
    summary += (f"\nconstant depth (ground-truth median): AbsRel {constant['abs_rel']:.3f}, "
                f"RMSE {constant['rmse']:.2f} m, d1 {constant['d1']:.2f}")
    print(f"{name} ({stage}) on Middlebury Motorcycle, {int(valid.sum())} pixels with ground truth:\n{summary}")
    write_figure(left, gt, valid, pred, stage, f"{name} ({stage}): {summary}", args.out)
    print(f"wrote {args.out}")
    return 0


def write_figure(image: np.ndarray, gt: np.ndarray, valid: np.ndarray, pred: np.ndarray, stage: str,
                 title: str, path: Path) -> None:
    """image | ground-truth depth (grey: no measurement) | prediction, with colour bars."""
    height, width = gt.shape
    panel_w = 3.2
    panel_h = panel_w * height / width
    fig = Figure(figsize=(3 * panel_w + 1.6, panel_h + 0.9), dpi=110)
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=8)
    cmap = matplotlib.colormaps[DEPTH_CMAP].with_extremes(bad="0.6")
    gt_shown = np.ma.masked_array(gt, mask=~valid)
    # Metric predictions share the ground truth's colour scale, so a wrong scale is visible;
    # relative ones get their own.
    low, high = float(gt[valid].min()), float(gt[valid].max())
    if stage == "nyu":
        low, high = min(low, float(pred.min())), max(high, float(pred.max()))
    axes = fig.subplots(1, 3, gridspec_kw={"left": 0.01, "right": 0.88, "bottom": 0.02, "top": 0.86, "wspace": 0.04})
    for ax, label in zip(axes, ("image (left view)", "ground truth (from disparity)", "prediction"), strict=True):
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    axes[0].imshow(image)
    shown = axes[1].imshow(gt_shown, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
    if stage == "nyu":
        axes[2].imshow(pred, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        bar = fig.colorbar(shown, cax=fig.add_axes((0.9, 0.1, 0.015, 0.7)))
        bar.set_label("depth (m)", fontsize=8)
    else:
        own = axes[2].imshow(pred, cmap=cmap, interpolation="nearest")
        bar = fig.colorbar(shown, cax=fig.add_axes((0.89, 0.1, 0.012, 0.7)))
        bar.set_label("depth (m)", fontsize=7)
        rel = fig.colorbar(own, cax=fig.add_axes((0.95, 0.1, 0.012, 0.7)))
        rel.set_label("relative depth", fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


if __name__ == "__main__":
    sys.exit(main())
