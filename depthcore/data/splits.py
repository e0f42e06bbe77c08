"""Train / val / test frame selection for NYU Depth V2.

All indices returned here are 0-based frame indices into the labeled file. Split files
and the shipped official split use MATLAB's 1-based indices; the conversion happens once,
in this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from depthcore.errors import DataError, MissingFileError

SPLITS = ("train", "val", "test")
SCHEMES = ("official", "seed_random")
OFFICIAL_SPLIT_RESOURCE = "nyu_splits.json"
# The seed study's random frame split: train / val / test fractions over all frames.
SEED_RANDOM_FRACTIONS = (0.70, 0.15, 0.15)


def official_split() -> tuple[np.ndarray, np.ndarray, int]:
    """The official 795 / 654 split shipped with the package: (train, test, num_frames), 0-based."""
    text = resources.files("depthcore.data").joinpath(OFFICIAL_SPLIT_RESOURCE).read_text()
    data = json.loads(text)
    train = np.asarray(data["trainNdxs"], dtype=np.int64) - 1
    test = np.asarray(data["testNdxs"], dtype=np.int64) - 1
    return train, test, int(data["num_frames"])


def _as_indices(value: np.ndarray, key: str, where: str, num_frames: int) -> np.ndarray:
    """Validate a 1-based MATLAB index vector and return it 0-based."""
    arr = np.asarray(value).ravel()
    if arr.size == 0:
        raise DataError(f"{where}: {key}: expected indices, found an empty array")
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        # MATLAB saves doubles by default; integral doubles are indices all the same.
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise DataError(f"{where}: {key} must hold integer indices, found dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 1 or hi > num_frames:
        raise DataError(f"{where}: {key} must be 1-based indices within 1..{num_frames}, found values in {lo}..{hi}")
    if np.unique(arr).size != arr.size:
        raise DataError(f"{where}: {key}: expected distinct indices, found duplicates")
    return arr - 1


def load_split_file(path: str | os.PathLike, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a MATLAB v5 split file with 1-based ``trainNdxs`` / ``testNdxs``; return 0-based."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: split file not found")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for non-MAT input
        raise DataError(f"{path}: expected a MATLAB v5 split file, found one scipy cannot read ({exc})") from None
    missing = [k for k in ("trainNdxs", "testNdxs") if k not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: missing {missing} (expected trainNdxs and testNdxs), found {found}")
    train = _as_indices(mat["trainNdxs"], "trainNdxs", str(path), num_frames)
    test = _as_indices(mat["testNdxs"], "testNdxs", str(path), num_frames)
    overlap = np.intersect1d(train, test)
    if overlap.size:
        raise DataError(
            f"{path}: trainNdxs and testNdxs must be disjoint, found {overlap.size} shared "
            f"frames (first 1-based: {int(overlap[0]) + 1})"
        )
    return np.sort(train), np.sort(test)


def train_test_split(
    data_path: str | os.PathLike, num_frames: int, split_file: str | os.PathLike | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """(train, test, description) from ``split_file``, or the shipped official split if None."""
    if split_file is not None:
        train, test = load_split_file(split_file, num_frames)
        return train, test, f"file:{Path(split_file).name}"
    train, test, official_frames = official_split()
    if official_frames != num_frames:
        raise DataError(
            f"{data_path}: the shipped official split indexes {official_frames} frames but the file "
            f"has {num_frames}; pass a split file (or use scheme='seed_random')"
        )
    return np.sort(train), np.sort(test), "official"


def carve_val_by_scene(
    train: np.ndarray, scenes: Sequence[str], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split train frames into (train, val) by whole scenes.

    NYU's consecutive frames of one scene are near-duplicates, so a frame-level split would
    leak; instead whole scenes (seeded order) go to val until about ``val_fraction`` of the
    train frames are there. ``scenes`` is indexed by frame index.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), found {val_fraction}")
    train = np.sort(np.asarray(train, dtype=np.int64))
    names = sorted({scenes[i] for i in train})
    if val_fraction == 0.0 or len(names) < 2:
        return train, train[:0]
    target = val_fraction * train.size
    order = np.random.default_rng(seed).permutation(len(names))
    counts = {name: 0 for name in names}
    for i in train:
        counts[scenes[i]] += 1
    val_names: set[str] = set()
    total = 0
    for k in order[:-1]:  # at least one scene always stays in train
        if total >= target:
            break
        name = names[k]
        # Stop rather than overshoot when adding this scene lands farther from the target.
        if val_names and abs(total + counts[name] - target) > abs(total - target):
            break
        val_names.add(name)
        total += counts[name]
    in_val = np.array([scenes[i] in val_names for i in train], dtype=bool)
    return train[~in_val], train[in_val]


def seed_random_split(num_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seed study's random 70/15/15 frame split over all frames: (train, val, test)."""
    perm = np.random.default_rng(seed).permutation(num_frames)
    n_train = int(round(SEED_RANDOM_FRACTIONS[0] * num_frames))
    n_val = int(round(SEED_RANDOM_FRACTIONS[1] * num_frames))
    parts = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
    return tuple(np.sort(p).astype(np.int64) for p in parts)  # type: ignore[return-value]


def select_frames(
    split: str,
    scheme: str,
    num_frames: int,
    scenes: Sequence[str],
    base_split: tuple[np.ndarray, np.ndarray] | None,
    val_fraction: float,
    seed: int,
) -> np.ndarray:
    """0-based sorted frame indices for ``split`` under ``scheme``.

    ``base_split`` is the (train, test) pair of the official scheme (shipped split, a
    split file, or the one stored in a cache); it is ignored for ``seed_random``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, found {split!r}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, found {scheme!r}")
    if scheme == "seed_random":
        train, val, test = seed_random_split(num_frames, seed)
        return {"train": train, "val": val, "test": test}[split]
    assert base_split is not None
    full_train, test = base_split
    if split == "test":
        return np.sort(test)
    train, val = carve_val_by_scene(full_train, scenes, val_fraction, seed)
    return train if split == "train" else val
