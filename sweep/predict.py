"""Predict depth for your own images: ``python -m sweep.predict --model SRC INPUT [INPUT ...]``.

``SRC`` is an export folder written by ``sweep.export`` (``config.yaml`` + ``state_dict.pt``) or
an MLflow URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/PATH``). Each
image is resized to the model's training size, predicted in batches, and the prediction is
resized back to the image's own resolution. Per image ``<stem>_depth.png`` (colour-mapped depth
with a colour bar: metres for a ``nyu`` model, relative units for a ``diw`` model) is written,
and with ``--npy`` also ``<stem>_depth.npy`` (float32, H x W).

Exit codes: 0 all images done; 1 some images could not be read (the others are written);
2 a bad ``--model``, an input that matches nothing, or another usage mistake.
"""

from __future__ import annotations

import argparse
import glob
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from tqdm import tqdm

from depthcore.data.transforms import resize_image
from depthcore.engine import resolve_device as engine_device
from depthcore.viz import figure_pixels, write_depth_png
from sweep.export.loaded import DEPTH_LABELS, ExportedModel, ExportError, PredictError, load_exported
from sweep.tracking.store import DEFAULT_STORE, first_line

# Loading (sweep.export.loaded) and drawing (depthcore.viz) live in their own modules; their names
# stay importable from here, the module users call.
__all__ = ["DEPTH_LABELS", "ExportError", "ExportedModel", "PredictError", "figure_pixels", "load_exported",
           "predict_images", "write_depth_png"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm")
"""What a folder or a glob pattern contributes; a file named on the command line is always read."""
DEFAULT_OUT = "predictions"
PROGRESS_MIN_IMAGES = 5
"""Show a progress bar from this many images on."""

class InputError(PredictError):
    """An input path, folder or pattern yields no image."""


@dataclass
class Failure:
    path: Path
    reason: str


@dataclass
class PredictResult:
    """What ``predict_images`` did: the files it wrote, the images it could not read, timing."""

    out_dir: Path
    written: list[Path] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    predicted: int = 0
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.predicted / self.seconds if self.seconds > 0 else float("nan")


# -- inputs ------------------------------------------------------------------------------------


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths, first occurrence kept.

    Raises ``InputError`` naming the first input that yields nothing.
    """
    paths: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            matches = _images_in(path)
            if not matches:
                raise InputError(f"{item}: folder holds no images (looked for {' '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            matches = [path]
        elif any(char in item for char in "*?["):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if _is_image(Path(p)))
            if not matches:
                raise InputError(f"{item}: pattern matches no image files")
        else:
            raise InputError(f"{item}: no such file or folder")
        for match in matches:
            key = match.resolve()
            if key not in seen:
                seen.add(key)
                paths.append(match)
    return paths


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _images_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if _is_image(p)), key=lambda p: p.name)


def output_names(paths: Sequence[Path]) -> list[str]:
    """One distinct output stem per input path.

    An image's stem is used as it is unless another input has the same stem; such a group is
    told apart by as many parent folder names as needed (``a/x.png``, ``b/x.png`` -> ``a_x``,
    ``b_x``), and by the file suffix when that is what differs (``x.png``, ``x.jpg`` ->
    ``x_png``, ``x_jpg``). A name still taken gets ``-2``, ``-3``, ...
    """
    resolved = [Path(p).resolve() for p in paths]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, path in enumerate(resolved):
        groups[path.stem].append(i)
    names = [path.stem for path in resolved]
    for members in groups.values():
        if len(members) > 1:
            for i, name in zip(members, _distinct(resolved[i] for i in members), strict=True):
                names[i] = name
    taken: set[str] = set()
    for i, name in enumerate(names):
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}-{n}"
        taken.add(candidate)
        names[i] = candidate
    return names


def _distinct(group: Iterator[Path]) -> list[str]:
    """Names for paths sharing a stem: the fewest parent folders (and the suffix) that differ."""
    paths = list(group)
    longest = max(len(p.parent.parts) for p in paths)
    for depth in range(longest + 1):
        for with_suffix in (False, True):
            names = []
            for p in paths:
                parents = [part for part in p.parent.parts[len(p.parent.parts) - depth:] if part != p.anchor]
                name = "_".join([*parents, p.stem])
                names.append(f"{name}_{p.suffix.lstrip('.')}" if with_suffix and p.suffix else name)
            if len(set(names)) == len(names):
                return names
    return [p.stem for p in paths]  # identical paths: numbered by the caller


def read_image(path: Path) -> np.ndarray:
    """An image file as RGB uint8 ``(H, W, 3)``, upright per its EXIF orientation (raises ``OSError``)."""
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)
            return np.array(upright.convert("RGB"))
    except Exception as err:  # PIL raises OSError, ValueError, SyntaxError, ... for broken files
        raise OSError(f"{path}: cannot read image ({first_line(err)})") from None


# -- prediction ---------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """``depthcore.engine.resolve_device`` with a ``PredictError`` naming ``--device``."""
    try:
        return engine_device(device, "--device")
    except ValueError as err:  # depthcore's ConfigError: already one line naming --device
        raise PredictError(str(err)) from None
    except RuntimeError as err:  # torch: not a device name
        raise PredictError(f"--device {device}: {first_line(err)}") from None


def predict_images(
    exported: ExportedModel,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    npy: bool = False,
    batch_size: int = 8,
    device: str = "cpu",
    progress: bool = False,
    on_failure: Callable[[Failure], None] | None = None,
) -> PredictResult:
    """Predict depth for ``paths`` and write ``<stem>_depth.png`` (and ``.npy``) into ``out_dir``.

    Each image is resized to ``exported.size``, predicted in batches of ``batch_size``, and the
    prediction resized back (bilinear) to the image's own resolution. An image that cannot be
    read is recorded in ``failures`` (and passed to ``on_failure``) and the others go on.
    Output names are made distinct with ``output_names``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, found {batch_size}")
    files = [Path(p) for p in paths]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = resolve_device(device)
    model = exported.model.to(target).eval()
    result = PredictResult(out_dir=out)
    started = time.perf_counter()
    bar = tqdm(total=len(files), unit="image", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    pending: list[tuple[Path, str, torch.Tensor, tuple[int, int]]] = []

    def run_batch() -> None:
        batch = torch.cat([image for _, _, image, _ in pending]).to(target)  # (B, 3, h, w)
        with torch.inference_mode():
            depth = model(batch).float().cpu()  # (B, 1, h, w)
        for (path, name, _, shape), pred in zip(pending, depth, strict=True):
            full = F.interpolate(pred[None], size=shape, mode="bilinear", align_corners=False)[0, 0]  # (H, W)
            array = full.numpy().astype(np.float32)
            png = write_depth_png(array, out / f"{name}_depth.png", label=exported.depth_label,
                                  description=f"{exported.depth_label}; model {exported.name} ({exported.stage}); "
                                              f"input {path.name}")
            result.written.append(png)
            if npy:
                target_npy = out / f"{name}_depth.npy"
                np.save(target_npy, array)
                result.written.append(target_npy)
            result.predicted += 1
        bar.update(len(pending))
        pending.clear()

    try:
        for path, name in zip(files, output_names(files), strict=True):
            try:
                rgb = read_image(path)
            except OSError as err:
                failure = Failure(path, str(err))
                result.failures.append(failure)
                if on_failure is not None:
                    on_failure(failure)
                bar.update(1)
                continue
            image = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)[None]  # (1, 3, H, W)
            pending.append((path, name, resize_image(image, exported.size), (rgb.shape[0], rgb.shape[1])))
            if len(pending) == batch_size:
                run_batch()
        if pending:
            run_batch()
    finally:
        bar.close()
    result.seconds = time.perf_counter() - started
    return result


# -- command line -----------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected >= 1, found {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sweep.predict", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, metavar="SRC",
                   help="export folder (config.yaml + state_dict.pt) or MLflow URI: models:/NAME@ALIAS, "
                        "models:/NAME/VERSION, runs:/RUN_ID/PATH")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (all images inside) or quoted glob patterns such as 'photos/*.jpg'")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_OUT}/)")
    p.add_argument("--npy", action="store_true", help="also write <stem>_depth.npy (float32, H x W)")
    p.add_argument("--batch-size", type=_positive_int, default=8, metavar="N", help="images per forward pass (default: 8)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="where to run the model (default: cpu)")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI for models:/ and runs:/ sources (default: $MLFLOW_TRACKING_URI, "
                        f"else sqlite:///{DEFAULT_STORE} when it exists)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        paths = expand_inputs(args.inputs)
        exported = load_exported(args.model, tracking_uri=args.tracking_uri)
    except PredictError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    def report(failure: Failure) -> None:
        tqdm.write(f"error: {failure.reason}", file=sys.stderr)

    try:
        result = predict_images(exported, paths, args.out, npy=args.npy, batch_size=args.batch_size,
                                device=str(device), progress=len(paths) >= PROGRESS_MIN_IMAGES, on_failure=report)
    except OSError as err:  # the output folder cannot be written
        print(f"error: {first_line(err)}", file=sys.stderr)
        return 1
    rate = result.images_per_s
    speed = f"{rate:.1f} images/s" if math.isfinite(rate) else "no images"
    print(f"predicted depth for {result.predicted} image{'s' if result.predicted != 1 else ''} with "
          f"{exported.name} ({exported.stage}) -> {result.out_dir}/ ({speed})")
    if result.failures:
        print(f"error: {len(result.failures)} of {len(paths)} images could not be read: "
              f"{', '.join(str(f.path) for f in result.failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
