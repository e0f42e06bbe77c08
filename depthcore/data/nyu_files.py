"""On-disk layouts of NYU Depth V2: the labeled v7.3 ``.mat`` and our compact cache.

``.mat`` (MATLAB column-major, so axes reversed):
    images (N, 3, W, H) uint8; depths, rawDepths (N, W, H) float32 metres (raw: 0 = missing);
    scenes, sceneTypes: cell arrays of strings.
Cache (written by :func:`depthcore.data.cache.prepare_nyu_cache`, row-major, at one size):
    images (N, h, w, 3) uint8; depths, raw_depths (N, h, w) float16; valid_filled,
    valid_raw (N, h, w) bool; scenes (N,) str; train_indices, test_indices (0-based);
    full_frames (0-based frames with full-res GT); raw_depth_full_mm (len(full_frames), H0, W0)
    uint16 millimetres (0 = missing); attributes CACHE_VERSION_ATTR, height, width,
    native_height, native_width, split_source, source_file, and the identity
    source_fingerprint, split_fingerprint, cache_key (:mod:`depthcore.data.cache`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from depthcore.data.matfile import open_h5, read_cellstr
from depthcore.errors import DataError, MissingFileError

CACHE_VERSION_ATTR = "depthsweep_cache_version"
CACHE_VERSION = 1
MAT_KEYS = ("images", "depths", "rawDepths", "scenes")
CACHE_KEYS = (
    "images",
    "depths",
    "raw_depths",
    "valid_filled",
    "valid_raw",
    "scenes",
    "train_indices",
    "test_indices",
    "full_frames",
    "raw_depth_full_mm",
)


@dataclass
class FileMeta:
    """What a loader needs to know about a file before reading any frame."""

    path: Path
    source: str  # "mat" or "cache"
    num_frames: int
    native_size: tuple[int, int]  # (H0, W0)
    scenes: list[str]
    size: tuple[int, int] | None = None  # cache only: the stored (h, w)
    stored_split: tuple[np.ndarray, np.ndarray] | None = None  # cache only: (train, test)
    full_rows: dict[int, int] = field(default_factory=dict)  # cache only: frame -> row


def _require(f: h5py.File, keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in f]
    if missing:
        raise DataError(f"{f.filename}: not a valid {what}: missing {missing}, found {sorted(f.keys())}")


def read_meta(path: str | os.PathLike) -> FileMeta:
    """Inspect a ``.mat`` or cache file; the handle is closed before returning."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: NYU Depth V2 file not found")
    try:
        f = open_h5(path)
    except OSError as exc:
        raise DataError(f"{path}: expected an HDF5 / MATLAB v7.3 file, found one h5py cannot open ({exc})") from None
    with f:
        if CACHE_VERSION_ATTR in f.attrs:
            return _cache_meta(f, path)
        return _mat_meta(f, path)


def _mat_meta(f: h5py.File, path: Path) -> FileMeta:
    _require(f, MAT_KEYS, "NYU Depth V2 labeled .mat")
    n, channels, w0, h0 = f["images"].shape  # MATLAB order reversed: (N, 3, W, H)
    if channels != 3:
        raise DataError(f"{path}: images: expected shape (N, 3, W, H), found {f['images'].shape}")
    for key in ("depths", "rawDepths"):
        if f[key].shape != (n, w0, h0):
            raise DataError(f"{path}: {key}: expected shape {(n, w0, h0)}, found {f[key].shape}")
    scenes = read_cellstr(f, "scenes")
    if len(scenes) != n:
        raise DataError(f"{path}: scenes: expected {n} entries, found {len(scenes)}")
    return FileMeta(path, "mat", int(n), (int(h0), int(w0)), scenes)


def _cache_meta(f: h5py.File, path: Path) -> FileMeta:
    version = int(f.attrs[CACHE_VERSION_ATTR])
    if version != CACHE_VERSION:
        raise DataError(f"{path}: expected cache version {CACHE_VERSION}, found {version}; re-run prepare")
    _require(f, CACHE_KEYS, "NYU cache")
    scenes = [s.decode() if isinstance(s, bytes) else str(s) for s in f["scenes"][()]]
    full_frames = np.asarray(f["full_frames"][()], dtype=np.int64)
    return FileMeta(
        path=path,
        source="cache",
        num_frames=int(f["images"].shape[0]),
        native_size=(int(f.attrs["native_height"]), int(f.attrs["native_width"])),
        scenes=scenes,
        size=(int(f.attrs["height"]), int(f.attrs["width"])),
        stored_split=(
            np.asarray(f["train_indices"][()], dtype=np.int64),
            np.asarray(f["test_indices"][()], dtype=np.int64),
        ),
        full_rows={int(frame): row for row, frame in enumerate(full_frames)},
    )


def read_mat_frames(f: h5py.File, start: int, stop: int, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Read frames ``start:stop`` of a ``.mat`` in torch layout, native resolution.

    Returns the requested subset of ``image`` float32 (B, 3, H, W) in [0, 1], ``depth`` and
    ``raw`` float32 (B, 1, H, W). Only axes are swapped (never reshaped): MATLAB's (W, H)
    becomes (H, W).
    """
    out: dict[str, torch.Tensor] = {}
    if "image" in keys:
        images = f["images"][start:stop]  # (B, 3, W, H) uint8
        out["image"] = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 1, 3, 2))).float() / 255.0
    for key, name in (("depth", "depths"), ("raw", "rawDepths")):
        if key in keys:
            depth = np.asarray(f[name][start:stop], dtype=np.float32)  # (B, W, H)
            out[key] = torch.from_numpy(np.ascontiguousarray(depth.transpose(0, 2, 1)))[:, None]
    return out
