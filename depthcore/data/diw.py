"""Depth in the Wild (Chen et al. 2016): images with one relative-depth point pair each.

CSV format (``DIW_train_val.csv``, ``DIW_test.csv``), two lines per sample:
    1. image path relative to the dataset root
    2. ``y_A,x_A,y_B,x_B,ordinal,width,height``: 1-based (row, col) in the ORIGINAL image of
       size width x height; ordinal ``>`` means A is farther than B, ``<`` A is closer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from depthcore.data.transforms import as_size
from depthcore.errors import DataError, MissingFileError

SUBSETS = ("all", "train", "val")
RELATION = {">": 1, "<": -1}


@dataclass(frozen=True)
class DiwPair:
    """One annotation as written in the CSV (1-based, original-image coordinates)."""

    image: str
    y_a: int
    x_a: int
    y_b: int
    x_b: int
    relation: int  # +1: A farther than B; -1: A closer
    width: int
    height: int


def map_point(y: int, x: int, width: int, height: int, size: int | tuple[int, int]) -> tuple[int, int]:
    """Map a 1-based (y, x) in a width x height image to 0-based (row, col) at ``size``.

    ``row = floor((y - 1) * S_h / height)``, ``col = floor((x - 1) * S_w / width)``,
    clamped to the image. Integer arithmetic, so no float rounding at cell borders.
    """
    s_h, s_w = as_size(size)  # type: ignore[misc]
    row = (int(y) - 1) * s_h // int(height)
    col = (int(x) - 1) * s_w // int(width)
    return min(max(row, 0), s_h - 1), min(max(col, 0), s_w - 1)


def parse_diw_csv(csv_path: str | os.PathLike) -> list[DiwPair]:
    """Parse every line of a DIW CSV; a malformed line raises :class:`DataError` naming file and line."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise MissingFileError(f"{csv_path}: DIW annotation CSV not found")
    data = csv_path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{csv_path}:{line}: expected UTF-8 text, found byte 0x{data[exc.start]:02x}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    pairs: list[DiwPair] = []
    for i in range(0, len(lines), 2):
        image = lines[i].strip()
        where = f"{csv_path}:{i + 1}"
        if not image or image.count(",") >= 6:
            raise DataError(f"{where}: expected an image path, found {lines[i]!r}")
        if i + 1 >= len(lines):
            raise DataError(f"{csv_path}:{i + 2}: expected 'y_A,x_A,y_B,x_B,ordinal,width,height', found end of file")
        pairs.append(_parse_annotation(image, lines[i + 1], f"{csv_path}:{i + 2}"))
    if not pairs:
        raise DataError(f"{csv_path}: expected image/annotation line pairs, found no samples")
    return pairs


def _parse_annotation(image: str, line: str, where: str) -> DiwPair:
    expected = "expected 'y_A,x_A,y_B,x_B,ordinal,width,height'"
    fields = [s.strip() for s in line.split(",")]
    if len(fields) != 7:
        raise DataError(f"{where}: {expected}, found {len(fields)} fields in {line!r}")
    try:
        y_a, x_a, y_b, x_b, width, height = (int(fields[k]) for k in (0, 1, 2, 3, 5, 6))
    except ValueError:
        raise DataError(f"{where}: {expected} with integer coordinates and size, found {line!r}") from None
    if fields[4] not in RELATION:
        raise DataError(f"{where}: ordinal must be '>' or '<', found {fields[4]!r}")
    if width <= 0 or height <= 0:
        raise DataError(f"{where}: width and height must be positive, found {width}x{height}")
    return DiwPair(image, y_a, x_a, y_b, x_b, RELATION[fields[4]], width, height)


def subset_indices(num_samples: int, subset: str, val_fraction: float, seed: int) -> np.ndarray:
    """Sorted sample indices of a seeded train / val split ("all" = every sample)."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, found {subset!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), found {val_fraction}")
    if subset == "all":
        return np.arange(num_samples)
    perm = np.random.default_rng(seed).permutation(num_samples)
    n_val = int(round(val_fraction * num_samples))
    chosen = perm[:n_val] if subset == "val" else perm[n_val:]
    return np.sort(chosen)


def image_line(index: int) -> int:
    """The 1-based CSV line naming sample ``index``'s image (two lines per sample)."""
    return 2 * index + 1


def load_image(root: Path, name: str, where: str, size: tuple[int, int] | None) -> np.ndarray:
    """Decode ``root / name`` as uint8 RGB (H, W, 3), resized to ``size`` when given.

    ``where`` (``csv:line``) names the CSV line that refers to the image, for the error of a
    missing or undecodable file.
    """
    path = root / name
    if not path.is_file():
        raise MissingFileError(f"{path}: image named at {where} not found")
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")  # decodes the whole image: truncated data fails here
            if size is not None:
                # PIL sizes are (width, height).
                rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:  # PIL's decoders raise these
        reason = " ".join(str(exc).split())
        raise DataError(f"{path}: image named at {where}: expected a readable image, found {reason}") from None


class DepthInTheWild(Dataset):
    """DIW relative-depth pairs.

    Sample: ``image`` float32 (3, H, W) in [0, 1] (uint8 / 255 for every subset);
    ``points`` long (2, 2) = [[row_A, col_A], [row_B, col_B]] 0-based in the resized image;
    ``relation`` long scalar, +1 if A is farther than B, -1 if closer; ``index`` int, the
    0-based sample number in the CSV.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        root: str | os.PathLike,
        size: int | tuple[int, int] = (200, 200),
        subset: str = "all",
        val_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.csv_path = Path(csv_path)
        self.root = Path(root)
        hw = as_size(size)
        if hw is None:
            raise ValueError("DepthInTheWild needs a size: its images differ in size")
        self.size = hw
        self.pairs = parse_diw_csv(self.csv_path)
        self.indices = subset_indices(len(self.pairs), subset, val_fraction, seed)
        self.subset = subset

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict[str, Any]:
        index = int(self.indices[k])
        pair = self.pairs[index]
        array = load_image(self.root, pair.image, f"{self.csv_path}:{image_line(index)}", self.size)
        image = torch.from_numpy(array.transpose(2, 0, 1).copy()).float() / 255.0
        a = map_point(pair.y_a, pair.x_a, pair.width, pair.height, self.size)
        b = map_point(pair.y_b, pair.x_b, pair.width, pair.height, self.size)
        return {
            "image": image,
            "points": torch.tensor([a, b], dtype=torch.long),
            "relation": torch.tensor(pair.relation, dtype=torch.long),
            "index": index,
        }
