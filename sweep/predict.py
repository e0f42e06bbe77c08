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
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image, ImageOps
from torch import nn
from tqdm import tqdm

from depthcore.data.transforms import resize_image
from depthcore.models import model_from_spec
from depthcore.viz import DEPTH_CMAP

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "state_dict.pt"
DEPTH_LABELS = {"nyu": "depth (m)", "diw": "relative depth (arbitrary scale)"}
"""Colour-bar label per training stage: ``nyu`` models predict metres, ``diw`` models an
ordering whose scale is arbitrary (they were fine-tuned on ordinal point pairs)."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm")
"""What a folder or a glob pattern contributes; a file named on the command line is always read."""
DEFAULT_OUT = "predictions"
DEFAULT_STORE = Path("runs") / "sweeps" / "mlflow.db"
"""The sweeps' MLflow store (``study.output_dir`` of the shipped search spaces), used for
MLflow URIs when neither ``--tracking-uri`` nor ``MLFLOW_TRACKING_URI`` is given."""
PROGRESS_MIN_IMAGES = 5
"""Show a progress bar from this many images on."""
SEARCH_DEPTH = 2
"""How many folder levels below ``--model`` (or a download) are searched for the export files."""

# Figure geometry, in pixels at scale 1. The depth panel is drawn pixel for pixel at the
# image's resolution; the colour bar, its ticks and its label take a fixed strip on the right.
BAR_STRIP_PX = 130
BAR_GAP_PX = 12
BAR_WIDTH_PX = 16
MIN_HEIGHT_PX = 300
"""Shorter images are centred on a canvas this tall, so the colour-bar label fits."""
TEXT_SCALE_HEIGHT_PX = 600
"""Images taller than this get proportionally larger text and colour bar."""
FONT_SIZE = 10

# Two or more letters before the colon, so a Windows drive ("C:\\...") is not taken for a URI.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


class PredictError(Exception):
    """A user mistake (bad ``--model``, an input that matches nothing): one line, exit code 2."""


class ExportError(PredictError):
    """The model source is missing, incomplete or unreadable; the message names it."""


class InputError(PredictError):
    """An input path, folder or pattern yields no image."""


@dataclass
class ExportedModel:
    """A model rebuilt from an export, ready for inference (eval mode, on the CPU until used)."""

    model: nn.Module
    size: tuple[int, int]
    """Training resolution ``(H, W)`` (``data.size``): images are resized to it before prediction."""
    stage: str
    """``nyu`` (depth in metres) or ``diw`` (relative depth, arbitrary scale)."""
    name: str
    """Registered model name, e.g. ``unetpp_3m``."""
    config: dict[str, Any]
    """The full training config from ``config.yaml``."""
    directory: Path
    """The folder the export was read from (for an MLflow URI: a temporary download that lives
    as long as this object)."""
    source: str = ""
    """What was asked for: the folder or the MLflow URI."""
    _download: tempfile.TemporaryDirectory | None = field(default=None, repr=False, compare=False)

    @property
    def depth_label(self) -> str:
        return DEPTH_LABELS[self.stage]


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


# -- loading an export -----------------------------------------------------------------------


def is_uri(source: str) -> bool:
    """Whether ``source`` is an MLflow URI rather than a local path."""
    return bool(_URI.match(source)) and not Path(source).exists()


def load_exported(source: str, tracking_uri: str | None = None) -> ExportedModel:
    """Rebuild the model of an export folder or an MLflow URI (raises ``ExportError``).

    A local ``source`` is the export folder itself, a file in it, or a folder holding exactly
    one export within ``SEARCH_DEPTH`` levels. An MLflow URI is downloaded into a temporary
    folder with ``tracking_uri`` (default ``$MLFLOW_TRACKING_URI``, else ``runs/sweeps/mlflow.db``
    when it exists); the download must hold exactly one folder with both export files.
    """
    if is_uri(source):
        download = tempfile.TemporaryDirectory(prefix="depthsweep-model-")
        try:
            root = _download(source, Path(download.name), tracking_uri)
            directory = find_export_dir(root, source)
            exported = _load_directory(directory, source)
        except BaseException:
            download.cleanup()
            raise
        exported._download = download
        return exported
    path = Path(source)
    if not path.exists():
        raise ExportError(
            f"--model {source}: no such file or folder; expected an export folder holding {CONFIG_FILE} "
            f"and {WEIGHTS_FILE}, or an MLflow URI such as models:/NAME@ALIAS"
        )
    if path.is_file():
        path = path.parent
    return _load_directory(find_export_dir(path, source), source)


def find_export_dir(root: Path, source: str) -> Path:
    """The one folder at or below ``root`` (``SEARCH_DEPTH`` levels) with both export files."""
    root = Path(root)
    if root.is_file():
        root = root.parent
    found = [d for d in _folders(root, SEARCH_DEPTH) if (d / CONFIG_FILE).is_file() and (d / WEIGHTS_FILE).is_file()]
    if len(found) == 1:
        return found[0]
    if not found:
        present = sorted(p.name for p in root.iterdir())[:8]
        listing = ", ".join(present) if present else "nothing"
        raise ExportError(
            f"--model {source}: no folder holds both {CONFIG_FILE} and {WEIGHTS_FILE} "
            f"(an export written by sweep.export); found {listing}"
        )
    names = ", ".join(str(d.relative_to(root)) for d in found[:6])
    raise ExportError(f"--model {source}: {len(found)} exports found ({names}); name one of them")


def _folders(root: Path, depth: int) -> Iterator[Path]:
    yield root
    if depth > 0:
        for child in sorted(root.iterdir()):
            if child.is_dir():
                yield from _folders(child, depth - 1)


def _load_directory(directory: Path, source: str) -> ExportedModel:
    config_path = directory / CONFIG_FILE
    weights_path = directory / WEIGHTS_FILE
    try:
        config = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise ExportError(f"--model {source}: {config_path} is not readable YAML ({_first_line(err)})") from None
    spec, size, stage = _read_config(config, config_path)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a truncated or foreign file
        raise ExportError(f"--model {source}: {weights_path} is not a saved state dict ({_first_line(err)})") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ExportError(f"--model {source}: {weights_path} does not hold a state dict of tensors")
    try:
        model = model_from_spec(spec)
    except (KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ExportError(f"--model {source}: {config_path}: model: {message}") from None
    try:
        outcome = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise ExportError(f"--model {source}: {weights_path} does not fit model {spec['name']!r}: {detail}") from None
    if outcome.missing_keys or outcome.unexpected_keys:
        parts = []
        if outcome.missing_keys:
            parts.append(f"{len(outcome.missing_keys)} missing (e.g. {outcome.missing_keys[0]})")
        if outcome.unexpected_keys:
            parts.append(f"{len(outcome.unexpected_keys)} unexpected (e.g. {outcome.unexpected_keys[0]})")
        raise ExportError(f"--model {source}: {weights_path} does not fit model {spec['name']!r}: "
                          f"{' and '.join(parts)} weights")
    return ExportedModel(model=model.eval(), size=size, stage=stage, name=str(spec["name"]), config=config,
                         directory=directory, source=source)


def _read_config(config: Any, path: Path) -> tuple[dict[str, Any], tuple[int, int], str]:
    """The model spec, training size and stage of an export's config (raises ``ExportError``)."""
    if not isinstance(config, dict):
        raise ExportError(f"{path}: expected a mapping (a depthcore training config), found {type(config).__name__}")
    model = config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise ExportError(f"{path}: model: expected {{name: <model name>, args: {{...}}}}, found {model!r}")
    args = model.get("args") or {}
    if not isinstance(args, dict):
        raise ExportError(f"{path}: model.args: expected a mapping, found {args!r}")
    size = _section(config, "data").get("size")
    if (not isinstance(size, list | tuple) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ExportError(f"{path}: data.size: expected the training size [H, W], found {size!r}")
    stage = _section(config, "train").get("stage")
    if stage not in DEPTH_LABELS:
        raise ExportError(f"{path}: train.stage: expected one of {', '.join(DEPTH_LABELS)}, found {stage!r}")
    return {"name": model["name"], "args": dict(args)}, (int(size[0]), int(size[1])), stage


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name)
    return value if isinstance(value, dict) else {}


def default_tracking_uri() -> str | None:
    """``$MLFLOW_TRACKING_URI``, else the sweeps' store ``runs/sweeps/mlflow.db`` if it exists, else None."""
    from_env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if from_env:
        return from_env
    if DEFAULT_STORE.is_file():
        return f"sqlite:///{DEFAULT_STORE.resolve()}"
    return None


def _download(uri: str, dst: Path, tracking_uri: str | None) -> Path:
    tracking_uri = tracking_uri or default_tracking_uri()
    if tracking_uri is None and uri.startswith(("models:", "runs:")):
        # MLflow would fall back to ./mlflow.db, creating an empty store in the current folder.
        raise ExportError(f"--model {uri}: no MLflow store to look it up in: pass --tracking-uri or set "
                          f"MLFLOW_TRACKING_URI (there is no {DEFAULT_STORE} here)")
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        # Opening a missing sqlite file would create an empty store and report the model as unknown.
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.is_file():
            raise ExportError(f"--model {uri}: MLflow store {tracking_uri} does not exist (no file {db})")
    # Imported here: MLflow is needed only for URIs and takes seconds to import.
    import mlflow.artifacts

    where = f" (tracking URI {tracking_uri})" if tracking_uri else ""
    try:
        with _registry_uri(tracking_uri):
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(dst), tracking_uri=tracking_uri, registry_uri=tracking_uri
            )
    except Exception as err:  # MLflow raises its own and several standard types
        raise ExportError(f"--model {uri}: cannot download from MLflow{where}: {_first_line(err)}") from None
    return Path(local)


@contextmanager
def _registry_uri(uri: str | None) -> Iterator[None]:
    """Point MLflow's environment at ``uri`` for the duration of a download.

    MLflow (3.x) resolves ``models:/`` URIs through its process-wide registry URI and ignores
    the ``registry_uri`` argument of ``download_artifacts`` there, so the environment variables
    are set too, and restored afterwards.
    """
    if not uri:
        yield
        return
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update(dict.fromkeys(keys, uri))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


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
        raise OSError(f"{path}: cannot read image ({type(err).__name__}: {_first_line(err)})") from None


# -- prediction ---------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (CUDA when available); raises ``PredictError`` for missing CUDA."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PredictError(f"--device {device}: CUDA is not available here; use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise PredictError(f"--device {device}: {_first_line(err)}") from None


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
        print(f"error: {_first_line(err)}", file=sys.stderr)
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
