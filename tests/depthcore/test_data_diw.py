"""Depth in the Wild: CSV parsing, point mapping (1-based y/x -> 0-based row/col), subsets, scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from depthcore.data import DepthInTheWild
from depthcore.data.diw import map_point, parse_diw_csv


@pytest.mark.parametrize(
    ("y", "x", "width", "height", "size", "expected"),
    [
        (1, 1, 640, 480, 200, (0, 0)),  # 1-based corner -> 0-based corner
        (480, 640, 640, 480, 200, (199, 199)),  # last pixel -> last cell
        (240, 10, 640, 480, 200, (99, 2)),  # row from y / height, col from x / width
        (10, 240, 640, 480, 200, (3, 74)),  # swapping x and y changes the answer
        (3, 5, 8, 6, (6, 8), (2, 4)),  # same size: just 1-based -> 0-based
        (700, -4, 640, 480, 200, (199, 0)),  # out-of-image annotations are clamped
        (241, 321, 640, 480, (100, 50), (50, 25)),  # non-square target: rows use S_h, cols S_w
    ],
)
def test_map_point(y, x, width, height, size, expected):
    assert map_point(y, x, width, height, size) == expected


def _write(root, lines):
    csv = root / "ann.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture()
def diw_dir(tmp_path):
    """Four 6x8 images; image k has value k*50 at 1-based (y=3, x=5) in every channel."""
    lines = []
    for k in range(4):
        img = np.full((6, 8, 3), 7, np.uint8)
        img[2, 4] = k * 50 + 10
        _png(tmp_path / "imgs" / f"{k}.png", img)
        ordinal = ">" if k % 2 == 0 else "<"
        lines += [f"./imgs/{k}.png", f"3,5,1,1,{ordinal},8,6"]
    return tmp_path, _write(tmp_path, lines)


def test_sample_points_relation_and_pixels(diw_dir):
    root, csv = diw_dir
    ds = DepthInTheWild(csv, root, size=(6, 8))
    assert len(ds) == 4
    for k in range(4):
        s = ds[k]
        assert s["index"] == k
        assert s["image"].shape == (3, 6, 8) and s["image"].dtype == torch.float32
        assert s["points"].dtype == torch.long and s["points"].tolist() == [[2, 4], [0, 0]]
        (ra, ca), _ = s["points"].tolist()
        # The marked pixel sits exactly at point A: row is y, column is x.
        assert torch.equal(s["image"][:, ra, ca], torch.full((3,), k * 50 + 10, dtype=torch.uint8).float() / 255.0)
        assert s["relation"].dtype == torch.long and s["relation"].dim() == 0
        assert int(s["relation"]) == (1 if k % 2 == 0 else -1)  # '>' = A farther = +1


def test_subsets_seeded_disjoint_and_same_scaling(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    _png(tmp_path / "same.png", img)
    lines = []
    for _ in range(40):
        lines += ["same.png", "1,1,10,12,>,12,10"]
    csv = _write(tmp_path, lines)
    train = DepthInTheWild(csv, tmp_path, size=(10, 12), subset="train", val_fraction=0.25, seed=3)
    val = DepthInTheWild(csv, tmp_path, size=(10, 12), subset="val", val_fraction=0.25, seed=3)
    assert len(val) == 10 and len(train) == 30
    assert not set(train.indices) & set(val.indices)
    assert set(train.indices) | set(val.indices) == set(range(40))
    assert list(DepthInTheWild(csv, tmp_path, size=4, subset="val", val_fraction=0.25, seed=3).indices) == list(
        val.indices
    )
    assert list(DepthInTheWild(csv, tmp_path, size=4, subset="val", val_fraction=0.25, seed=4).indices) != list(
        val.indices
    )
    expected = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    assert torch.equal(train[0]["image"], expected)
    assert torch.equal(val[0]["image"], expected)  # identical scaling for train and val


@pytest.mark.parametrize(
    ("lines", "line_no", "message"),
    [
        (["a.png", "1,1,2,2,>,4,4", "b.png", "1,1,2,>,4,4"], 4, "found 6 fields"),
        (["a.png", "1,1,2,2,=,4,4"], 2, "ordinal must be '>' or '<', found '='"),
        (["a.png", "1,x,2,2,>,4,4"], 2, "integer coordinates"),
        (["a.png", "1,1,2,2,>,0,4"], 2, "width and height must be positive"),
        (["a.png", "1,1,2,2,>,4,4", "b.png"], 4, "found end of file"),
        (["1,1,2,2,>,4,4", "a.png"], 1, "expected an image path"),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path, lines, line_no, message):
    csv = _write(tmp_path, lines)
    with pytest.raises(ValueError, match=message) as err:
        parse_diw_csv(csv)
    assert f"ann.csv:{line_no}:" in str(err.value)


def test_missing_image_is_named(tmp_path):
    csv = _write(tmp_path, ["gone/x.png", "1,1,2,2,<,4,4"])
    ds = DepthInTheWild(csv, tmp_path, size=8)
    with pytest.raises(FileNotFoundError, match=r"gone/x\.png"):
        ds[0]


def test_synthetic_diw_loads(synthetic_root):
    ds = DepthInTheWild(synthetic_root["diw_test_csv"], synthetic_root["diw_root"], size=(20, 24))
    relations = [int(ds[k]["relation"]) for k in range(len(ds))]
    assert abs(sum(relations)) <= 1  # balanced '>' and '<'
    for k in range(len(ds)):
        points = ds[k]["points"]
        assert (points[:, 0] < 20).all() and (points[:, 1] < 24).all() and (points >= 0).all()
