"""Frame selection: the shipped official split, split files, val by scene, the seed's random split."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from depthcore.data import NyuDepthV2
from depthcore.data.splits import (
    carve_val_by_scene,
    load_split_file,
    official_split,
    seed_random_split,
    select_frames,
)


def test_official_split_shipped_with_package():
    train, test, num_frames = official_split()
    assert (len(train), len(test), num_frames) == (795, 654, 1449)
    # 0-based now: together exactly 0..1448, disjoint.
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1449))
    # Spot checks against splits.mat (1-based there): trainNdxs starts 3, 4, 5; testNdxs starts 1, 2.
    assert list(np.sort(train)[:3]) == [2, 3, 4]
    assert list(np.sort(test)[:2]) == [0, 1]


def test_official_train_plus_val_is_795_with_disjoint_scenes():
    train, test, n = official_split()
    scenes = [f"scene_{i // 5:04d}" for i in range(n)]  # 5 consecutive frames per scene
    tr = select_frames("train", "official", n, scenes, (train, test), 0.15, seed=0)
    va = select_frames("val", "official", n, scenes, (train, test), 0.15, seed=0)
    te = select_frames("test", "official", n, scenes, (train, test), 0.15, seed=0)
    assert len(tr) + len(va) == 795 and len(te) == 654
    assert not {scenes[i] for i in tr} & {scenes[i] for i in va}
    assert set(np.concatenate([tr, va])) == set(train)
    assert abs(len(va) - 0.15 * 795) <= 10


def test_val_by_scene_is_seeded():
    scenes = [f"s{i // 4}" for i in range(200)]
    train = np.arange(0, 200, 2)
    a = carve_val_by_scene(train, scenes, 0.2, seed=1)
    b = carve_val_by_scene(train, scenes, 0.2, seed=1)
    c = carve_val_by_scene(train, scenes, 0.2, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])
    assert not {scenes[i] for i in a[0]} & {scenes[i] for i in a[1]}
    assert len(carve_val_by_scene(train, scenes, 0.0, seed=1)[1]) == 0


def test_seed_random_split_is_70_15_15_over_all_frames():
    tr, va, te = seed_random_split(1449, seed=0)
    assert (len(tr), len(va), len(te)) == (1014, 217, 218)
    assert np.array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(1449))
    assert not np.array_equal(tr, seed_random_split(1449, seed=1)[0])


def _write_split(path, train, test):
    scipy.io.savemat(path, {"trainNdxs": np.asarray(train).reshape(-1, 1), "testNdxs": np.asarray(test).reshape(-1, 1)})
    return path


def test_split_file_is_read_one_based(tmp_path):
    path = _write_split(tmp_path / "ok.mat", np.array([1, 3], np.uint16), np.array([2, 5], np.uint16))
    train, test = load_split_file(path, num_frames=5)
    assert list(train) == [0, 2] and list(test) == [1, 4]
    # MATLAB's default doubles are fine when integral.
    path = _write_split(tmp_path / "double.mat", np.array([1.0, 3.0]), np.array([2.0]))
    assert list(load_split_file(path, num_frames=3)[0]) == [0, 2]


@pytest.mark.parametrize(
    ("train", "test", "message"),
    [
        (
            np.array([0, 1], np.uint16),
            np.array([2], np.uint16),
            r"1-based indices within 1\.\.5, found values in 0\.\.1",
        ),
        (np.array([1, 6], np.uint16), np.array([2], np.uint16), r"within 1\.\.5, found values in 1\.\.6"),
        (np.array([1, 2], np.uint16), np.array([2, 3], np.uint16), "disjoint"),
        (np.array([1.5, 2.0]), np.array([3.0]), "integer indices"),
        (np.array([1, 1], np.uint16), np.array([3], np.uint16), "duplicate"),
    ],
)
def test_bad_split_file_names_file_and_problem(tmp_path, train, test, message):
    path = _write_split(tmp_path / "bad_split.mat", train, test)
    with pytest.raises(ValueError, match=message) as err:
        load_split_file(path, num_frames=5)
    assert "bad_split.mat" in str(err.value)


def test_split_file_missing_key(tmp_path):
    path = tmp_path / "nokey.mat"
    scipy.io.savemat(path, {"trainNdxs": np.array([[1]], np.uint16)})
    with pytest.raises(ValueError, match=r"nokey\.mat: missing \['testNdxs'\]"):
        load_split_file(path, num_frames=5)


def test_synthetic_splits_train_val_share_no_scene(synthetic_root):
    kwargs = dict(path=synthetic_root["nyu_mat"], size=(16, 16), split_file=synthetic_root["split_file"])
    parts = {s: NyuDepthV2(split=s, **kwargs) for s in ("train", "val", "test")}
    assert all(len(ds) > 0 for ds in parts.values())
    assert not set(parts["train"].scenes) & set(parts["val"].scenes)
    frames = [set(ds.indices.tolist()) for ds in parts.values()]
    assert not (frames[0] & frames[1]) and not (frames[0] & frames[2]) and not (frames[1] & frames[2])
    total = scipy.io.loadmat(synthetic_root["split_file"])
    assert len(frames[0]) + len(frames[1]) == total["trainNdxs"].size
    assert frames[2] == set((total["testNdxs"].ravel() - 1).tolist())


def test_official_split_refused_for_other_frame_counts(synthetic_root):
    with pytest.raises(ValueError, match="official split indexes 1449 frames but the file has \\d+"):
        NyuDepthV2(synthetic_root["nyu_mat"], "train")
