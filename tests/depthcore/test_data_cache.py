"""The compact HDF5 cache gives the same samples as the .mat, and its CLI."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from depthcore.data import NyuDepthV2, prepare_nyu_cache
from depthcore.data.prepare import main as prepare_main

SIZE = (24, 32)


@pytest.fixture(scope="module")
def cache(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "nyu.h5"
    return prepare_nyu_cache(
        synthetic_root["nyu_mat"], out, size=SIZE, split_file=synthetic_root["split_file"], progress=False
    )


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("depth", ["filled", "raw"])
def test_cache_matches_mat(synthetic_root, cache, split, depth):
    from_mat = NyuDepthV2(
        synthetic_root["nyu_mat"], split, size=SIZE, depth=depth, split_file=synthetic_root["split_file"]
    )
    from_cache = NyuDepthV2(cache, split, size=SIZE, depth=depth)
    assert from_cache.source == "cache" and from_mat.source == "mat"
    assert list(from_cache.indices) == list(from_mat.indices)
    assert from_cache.scenes == from_mat.scenes
    assert from_cache.native_size == from_mat.native_size
    for k in range(len(from_mat)):
        a, b = from_mat[k], from_cache[k]
        assert a["index"] == b["index"]
        torch.testing.assert_close(b["image"], a["image"], atol=0.51 / 255, rtol=0)
        # float16 keeps ~3 significant digits; depths are below 16 m here.
        torch.testing.assert_close(b["depth"], a["depth"], atol=8e-3, rtol=0)
        assert torch.equal(b["valid_mask"], a["valid_mask"])
        assert b["image"].dtype == a["image"].dtype == torch.float32


def test_cache_full_res_test_depth_in_millimetres(synthetic_root, cache):
    from_mat = NyuDepthV2(
        synthetic_root["nyu_mat"], "test", size=SIZE, split_file=synthetic_root["split_file"], full_res_gt=True
    )
    from_cache = NyuDepthV2(cache, "test", size=SIZE, full_res_gt=True)
    for k in range(len(from_mat)):
        a, b = from_mat[k], from_cache[k]
        assert b["depth_full"].shape == (1, *from_mat.native_size)
        torch.testing.assert_close(b["depth_full"], a["depth_full"], atol=5.1e-4, rtol=0)
        assert torch.equal(b["valid_full"], a["valid_full"])


def test_cache_layout_and_limits(cache, synthetic_root):
    with h5py.File(cache, "r") as f:
        assert f.attrs["depthsweep_cache_version"] == 1
        assert f["images"].dtype == np.uint8 and f["images"].shape[1:] == (*SIZE, 3)
        assert f["depths"].dtype == np.float16 and f["raw_depth_full_mm"].dtype == np.uint16
        assert f["raw_depth_full_mm"].compression == "gzip"
        assert len(f["raw_depth_full_mm"]) == len(f["test_indices"])
    assert not list(cache.parent.glob(".*tmp*"))  # written atomically, no leftovers
    with pytest.raises(ValueError, match=r"cache holds frames at size \(24, 32\), requested \(16, 16\)"):
        NyuDepthV2(cache, "train", size=16)
    with pytest.raises(ValueError, match="full-resolution depth only for its test frames"):
        NyuDepthV2(cache, "train", size=SIZE, full_res_gt=True)


def test_cache_pickles_without_handle(cache):
    import pickle

    ds = NyuDepthV2(cache, "train", size=SIZE)
    first = ds[0]["depth"]
    clone = pickle.loads(pickle.dumps(ds))
    torch.testing.assert_close(clone[0]["depth"], first)


def test_prepare_cli(synthetic_root, tmp_path, capsys):
    out = tmp_path / "cli.h5"
    argv = [
        "nyu",
        "--src",
        str(synthetic_root["nyu_mat"]),
        "--out",
        str(out),
        "--size",
        "8",
        "12",
        "--split-file",
        str(synthetic_root["split_file"]),
    ]
    assert prepare_main(argv) == 0
    captured = capsys.readouterr()
    assert str(out) in captured.out
    assert "prepare: " in captured.err and "frames" in captured.err
    assert NyuDepthV2(out, "test", size=(8, 12))[0]["image"].shape == (3, 8, 12)


def test_prepare_cli_missing_source(tmp_path, capsys):
    missing = tmp_path / "nope.mat"
    assert prepare_main(["nyu", "--src", str(missing), "--out", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(missing) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.h5").exists()
