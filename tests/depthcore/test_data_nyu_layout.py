"""NyuDepthV2 on tiny MATLAB-v7.3-layout files with known values at every (frame, channel, row, col).

The files are written here with plain h5py and explicit element-wise indexing (not the
project's writer), so a transposed or reshaped axis, a swapped x / y or a 1-based frame index
in the loader fails these tests.
"""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from torch.utils.data import DataLoader

from depthcore.data import NyuDepthV2

N, H, W = 4, 4, 6  # H != W so a swapped axis changes shapes too
SCENES = ["bedroom_0001", "bedroom_0001", "kitchen_0002", "office_0003"]


def pixel(n: int, c: int, y: int, x: int) -> int:
    """Unique uint8 value per (frame, channel, row, col)."""
    return n * 60 + c * 25 + x * 4 + y


def depth_at(n: int, y: int, x: int) -> float:
    return 1.0 + n + 0.1 * x + 0.01 * y


def raw_at(n: int, y: int, x: int) -> float:
    return 0.0 if (x + 2 * y + n) % 3 == 0 else depth_at(n, y, x) + 0.5


def write_layout_mat(path, filled_override=None) -> None:
    """A v7.3-like file: images (N, 3, W, H), depths (N, W, H), MATLAB cellstr scenes."""
    images = np.zeros((N, 3, W, H), np.uint8)
    depths = np.zeros((N, W, H), np.float32)
    raws = np.zeros((N, W, H), np.float32)
    for n in range(N):
        for x in range(W):
            for y in range(H):
                depths[n, x, y] = depth_at(n, y, x)
                raws[n, x, y] = raw_at(n, y, x)
                for c in range(3):
                    images[n, c, x, y] = pixel(n, c, y, x)
    if filled_override is not None:
        for (n, y, x), value in filled_override.items():
            depths[n, x, y] = value
    with h5py.File(path, "w", userblock_size=512) as f:
        f["images"], f["depths"], f["rawDepths"] = images, depths, raws
        refs = f.create_group("#refs#")
        cell = np.empty((1, N), dtype=h5py.ref_dtype)
        for n, name in enumerate(SCENES):
            ds = refs.create_dataset(f"s{n}", data=np.array([[ord(ch)] for ch in name], np.uint16))
            ds.attrs["MATLAB_class"] = np.bytes_("char")
            cell[0, n] = ds.ref
        f.create_dataset("scenes", data=cell, dtype=h5py.ref_dtype)


@pytest.fixture()
def layout(tmp_path):
    mat = tmp_path / "layout.mat"
    write_layout_mat(mat)
    split = tmp_path / "split.mat"
    # 1-based: frames 1, 2, 3 train (two scenes), frame 4 test.
    scipy.io.savemat(split, {"trainNdxs": np.array([[1], [2], [3]], np.uint16), "testNdxs": np.array([[4]], np.uint16)})
    return mat, split


def expected_image(n: int) -> torch.Tensor:
    return torch.tensor([[[pixel(n, c, y, x) for x in range(W)] for y in range(H)] for c in range(3)]) / 255.0


def test_native_pixels_land_at_row_col_channel_frame(layout):
    mat, split = layout
    ds = NyuDepthV2(mat, "test", size=None, split_file=split, depth="raw", full_res_gt=True)
    assert ds.native_size == (H, W)
    assert ds.source == "mat"
    assert list(ds.indices) == [3] and ds.scenes == ["office_0003"]
    s = ds[0]
    assert s["index"] == 3
    assert s["image"].shape == (3, H, W) and s["image"].dtype == torch.float32
    torch.testing.assert_close(s["image"], expected_image(3))
    raw = torch.tensor([[[raw_at(3, y, x) for x in range(W)] for y in range(H)]])
    torch.testing.assert_close(s["depth"], raw)
    assert torch.equal(s["valid_mask"], raw > 0)
    torch.testing.assert_close(s["depth_full"], raw)
    assert torch.equal(s["valid_full"], raw > 0)
    assert s["valid_mask"].dtype == torch.bool


def test_filled_depth_and_frame_index_for_every_train_frame(layout):
    mat, split = layout
    ds = NyuDepthV2(mat, "train", size=None, split_file=split, val_fraction=0.0)
    assert list(ds.indices) == [0, 1, 2]
    for k, n in enumerate([0, 1, 2]):
        s = ds[k]
        assert s["index"] == n
        torch.testing.assert_close(s["image"], expected_image(n))
        filled = torch.tensor([[[depth_at(n, y, x) for x in range(W)] for y in range(H)]])
        torch.testing.assert_close(s["depth"], filled)
        assert bool(s["valid_mask"].all())


def test_scene_names_read_from_matlab_cellstr(layout):
    mat, split = layout
    ds = NyuDepthV2(mat, "train", size=None, split_file=split, val_fraction=0.0)
    assert ds.scenes == SCENES[:3]


def test_filled_mask_rejects_tiny_and_nan_depth(tmp_path, layout):
    _, split = layout
    mat = tmp_path / "holes.mat"
    write_layout_mat(mat, filled_override={(0, 1, 2): 0.0, (0, 3, 5): np.nan, (0, 0, 0): 5e-4})
    s = NyuDepthV2(mat, "train", size=None, split_file=split, val_fraction=0.0)[0]
    invalid = {(1, 2), (3, 5), (0, 0)}
    for y in range(H):
        for x in range(W):
            assert bool(s["valid_mask"][0, y, x]) == ((y, x) not in invalid), (y, x)
    assert torch.isfinite(s["depth"]).all()


def test_resize_keeps_gradient_directions(tmp_path):
    """An x-only gradient must stay constant down each column after resizing, and vice versa."""
    n, h, w = 2, 24, 40
    images = np.zeros((n, 3, w, h), np.uint8)
    depths = np.ones((n, w, h), np.float32)
    for x in range(w):
        images[:, 0, x, :] = 5 * x  # red grows along columns (x)
        depths[:, x, :] = 1.0 + 0.1 * x
    for y in range(h):
        images[:, 1, :, y] = 10 * y  # green grows along rows (y)
    mat = tmp_path / "grad.mat"
    with h5py.File(mat, "w", userblock_size=512) as f:
        f["images"], f["depths"], f["rawDepths"] = images, depths, depths
        refs = f.create_group("#refs#")
        cell = np.empty((1, n), dtype=h5py.ref_dtype)
        for i in range(n):
            cell[0, i] = refs.create_dataset(f"s{i}", data=np.array([[ord("a")]], np.uint16)).ref
        f.create_dataset("scenes", data=cell, dtype=h5py.ref_dtype)
    ds = NyuDepthV2(mat, "train", size=(8, 10), scheme="seed_random")
    for depth_kind in ("filled", "raw"):
        s = NyuDepthV2(mat, "train", size=(8, 10), scheme="seed_random", depth=depth_kind)[0]
        red, green, depth = s["image"][0], s["image"][1], s["depth"][0]
        assert s["image"].shape == (3, 8, 10)
        assert torch.allclose(red, red[:1].expand_as(red)) and (red[0].diff() > 0).all()
        assert torch.allclose(green, green[:, :1].expand_as(green)) and (green[:, 0].diff() > 0).all()
        assert torch.allclose(depth, depth[:1].expand_as(depth)) and (depth[0].diff() > 0).all()
    assert ds.native_size == (h, w)


def test_raw_resize_never_blends_holes(layout):
    mat, split = layout
    s = NyuDepthV2(mat, "train", size=(3, 4), split_file=split, depth="raw", val_fraction=0.0)[1]
    values = {round(raw_at(1, y, x), 4) for y in range(H) for x in range(W)}
    got = {round(float(v), 4) for v in s["depth"].flatten()}
    assert got <= values  # nearest neighbour: only values that exist at native resolution
    assert torch.equal(s["valid_mask"], s["depth"] > 0)


def test_pickle_drops_handle_and_close_reopens(layout):
    mat, split = layout
    ds = NyuDepthV2(mat, "train", size=None, split_file=split, val_fraction=0.0)
    first = ds[0]["image"]
    assert ds._h5._file is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._h5._file is None
    torch.testing.assert_close(clone[0]["image"], first)
    ds.close()
    assert ds._h5._file is None
    torch.testing.assert_close(ds[0]["image"], first)


def test_dataloader_workers_after_parent_opened_file(layout):
    mat, split = layout
    ds = NyuDepthV2(mat, "train", size=None, split_file=split, val_fraction=0.0)
    _ = ds[0]  # the parent holds an open handle when the workers fork
    loader = DataLoader(ds, batch_size=1, num_workers=2, multiprocessing_context="fork")
    seen = {int(b["index"][0]): b["image"][0] for b in loader}
    assert sorted(seen) == [0, 1, 2]
    for n, image in seen.items():
        torch.testing.assert_close(image, expected_image(n))


def test_augment_flips_all_maps_together(layout):
    mat, split = layout
    ds = NyuDepthV2(mat, "train", size=None, split_file=split, val_fraction=0.0, augment=True, depth="raw")
    plain = NyuDepthV2(mat, "train", size=None, split_file=split, val_fraction=0.0, depth="raw")[0]
    torch.manual_seed(0)
    flips = 0
    for _ in range(12):
        s = ds[0]
        flipped = torch.equal(s["depth"], plain["depth"].flip(-1))
        assert flipped or torch.equal(s["depth"], plain["depth"])
        assert torch.equal(s["valid_mask"], s["depth"] > 0)
        assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
        flips += flipped
    assert 0 < flips < 12
    with pytest.raises(ValueError, match="only for split='train'"):
        NyuDepthV2(mat, "test", split_file=split, augment=True)


def test_missing_dataset_is_named(tmp_path):
    bad = tmp_path / "bad.mat"
    with h5py.File(bad, "w") as f:
        f["images"] = np.zeros((1, 3, 4, 4), np.uint8)
    with pytest.raises(ValueError, match=r"bad\.mat.*missing \['depths', 'rawDepths', 'scenes'\]"):
        NyuDepthV2(bad, "train", scheme="seed_random")
