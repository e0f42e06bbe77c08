"""The synthetic generator writes the real file formats, is deterministic, and renders scenes (not noise)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io

from depthcore.data import generate_synthetic
from depthcore.data.diw import parse_diw_csv
from depthcore.data.pairs import FAR_OFFSET, draw_pair, vertical_rule_correct
from depthcore.data.synthetic import main, synthetic_is_current

TINY = dict(num_frames=6, height=16, width=20, diw_train=2, diw_test=2, progress=False)


def test_mat_is_matlab_v73_layout(synthetic_root):
    path = synthetic_root["nyu_mat"]
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
        n, _, w, h = f["images"].shape
        assert (h, w) == (48, 64)  # stored as (N, 3, W, H): MATLAB's reversed axes
        assert f["images"].dtype == np.uint8 and f["depths"].shape == f["rawDepths"].shape == (n, w, h)
        assert f["depths"].dtype == f["rawDepths"].dtype == np.float32
        assert f["images"].attrs["MATLAB_class"] == b"uint8"
        assert f["depths"].attrs["MATLAB_class"] == b"single"
        for key in ("scenes", "sceneTypes"):
            cell = f[key]
            assert cell.shape == (1, n) and cell.dtype == h5py.ref_dtype
            assert cell.attrs["MATLAB_class"] == b"cell"
            chars = f[cell[0, 0]]
            assert chars.dtype == np.uint16 and chars.shape[1] == 1
            assert chars.attrs["MATLAB_class"] == b"char" and chars.attrs["MATLAB_int_decode"] == 2
        name = "".join(chr(c) for c in f[f["scenes"][0, 0]][()].ravel())
        kind = "".join(chr(c) for c in f[f["sceneTypes"][0, 0]][()].ravel())
        assert name.startswith(kind + "_") and name[-4:].isdigit()


def test_depth_and_raw_holes(synthetic_root):
    with h5py.File(synthetic_root["nyu_mat"], "r") as f:
        depth, raw = f["depths"][()], f["rawDepths"][()]
    assert 0.3 < depth.min() and depth.max() < 12.0
    holes = raw == 0
    assert 0.005 < holes.mean() < 0.4
    close = np.abs(raw[~holes] - depth[~holes]) / depth[~holes]
    assert np.median(close) < 0.01


def test_split_file_covers_frames_once_by_scene(synthetic_root):
    split = scipy.io.loadmat(synthetic_root["split_file"])
    train, test = split["trainNdxs"], split["testNdxs"]
    assert train.dtype == test.dtype == np.uint16 and train.shape[1] == test.shape[1] == 1
    frames = np.sort(np.concatenate([train.ravel(), test.ravel()]))
    assert np.array_equal(frames, np.arange(1, len(frames) + 1))  # 1-based, each once
    assert 0.4 < train.size / frames.size < 0.75
    with h5py.File(synthetic_root["nyu_mat"], "r") as f:
        scenes = ["".join(chr(c) for c in f[r][()].ravel()) for r in f["scenes"][0]]
    assert not {scenes[i - 1] for i in train.ravel()} & {scenes[i - 1] for i in test.ravel()}
    assert len(set(scenes)) < len(scenes)  # several frames per scene


def test_images_are_rendered_scenes_not_noise(synthetic_root):
    """Neighbouring pixels correlate strongly and image edges sit where depth jumps."""
    with h5py.File(synthetic_root["nyu_mat"], "r") as f:
        images = f["images"][()].transpose(0, 3, 2, 1).astype(np.float64).mean(-1)  # (N, H, W)
        depths = f["depths"][()].transpose(0, 2, 1)
    ratios = []
    for img, depth in zip(images, depths, strict=True):
        assert np.corrcoef(img[:, :-1].ravel(), img[:, 1:].ravel())[0, 1] > 0.7
        grad = np.abs(np.diff(img, axis=1))
        jump = np.abs(np.diff(depth, axis=1)) / depth[:, 1:] > 0.05
        if jump.sum() >= 5:
            ratios.append(grad[jump].mean() / grad[~jump].mean())
    assert len(ratios) >= len(images) // 2 and np.median(ratios) > 2.0
    # Near-duplicate consecutive frames within a scene, as in the real data.
    assert np.abs(images[0] - images[1]).mean() < np.abs(images[0] - images[-1]).mean()


def test_diw_pairs_follow_exact_depth():
    depth = np.array([[1.0, 1.05, 3.0], [2.0, 1.0, 1.1], [1.2, 4.0, 1.0]])
    rng = np.random.default_rng(0)
    for index in range(8):
        y_a, x_a, y_b, x_b = draw_pair(depth, index, rng)
        ratio = depth[y_a, x_a] / depth[y_b, x_b]
        assert ratio > 1.15 if index % 2 == 0 else ratio < 1 / 1.15


def test_vertical_rule_scores_chance_on_generated_pairs():
    """On rendered rooms the upper point is usually farther; the pairs are drawn so that the rule
    "the upper point is farther" scores 50 +- 8 %, with most pairs far apart vertically."""
    from depthcore.data.render import render
    from depthcore.data.rooms import SCENE_TYPES, sample_camera, sample_room

    upper_farther_share, rule, far = [], [], []
    for i in range(48):
        rng = np.random.default_rng([3, i])
        room = sample_room(rng, SCENE_TYPES[i % len(SCENE_TYPES)])
        _, depth, _ = render(room, sample_camera(rng, room), 36, 48, rng)
        # Random pairs, for contrast: the rule is far above chance on them.
        ys, xs = rng.integers(0, 36, (2, 64)), rng.integers(0, 48, (2, 64))
        apart = ys[0] != ys[1]
        upper_farther_share += list(((ys[0] < ys[1]) == (depth[ys[0], xs[0]] > depth[ys[1], xs[1]]))[apart])
        y_a, x_a, y_b, x_b = draw_pair(depth, i, rng)
        rule.append(vertical_rule_correct(y_a, y_b, depth[y_a, x_a] > depth[y_b, x_b]))
        far.append(abs(y_a - y_b) >= FAR_OFFSET * 36)
    assert np.mean(upper_farther_share) > 0.65
    assert abs(np.mean(rule) - 0.5) <= 0.08
    assert np.mean(far) >= 0.5


def test_synthetic_is_current_only_for_this_version_and_settings(tmp_path):
    assert not synthetic_is_current(tmp_path / "none", **{k: v for k, v in TINY.items() if k != "progress"})
    generate_synthetic(tmp_path / "a", seed=1, **TINY)
    settings = {k: v for k, v in TINY.items() if k != "progress"}
    assert synthetic_is_current(tmp_path / "a", seed=1, **settings)
    assert not synthetic_is_current(tmp_path / "a", seed=2, **settings)
    manifest = tmp_path / "a" / "synthetic.json"
    manifest.write_text(manifest.read_text().replace('"generator_version": ', '"generator_version": 1'))
    assert not synthetic_is_current(tmp_path / "a", seed=1, **settings)


def test_diw_files_in_official_format(synthetic_root):
    pairs = parse_diw_csv(synthetic_root["diw_train_csv"])
    assert len(pairs) == 16
    assert sum(p.relation for p in pairs) == 0
    sizes = set()
    for p in pairs:
        from PIL import Image

        with Image.open(synthetic_root["diw_root"] / p.image) as img:
            assert img.size == (p.width, p.height)
        assert 1 <= p.y_a <= p.height and 1 <= p.x_a <= p.width
        sizes.add((p.width, p.height))
    assert len(sizes) > 1


def test_generator_is_deterministic_by_seed(tmp_path):
    a = generate_synthetic(tmp_path / "a", seed=5, **TINY)
    b = generate_synthetic(tmp_path / "b", seed=5, **TINY)
    c = generate_synthetic(tmp_path / "c", seed=6, **TINY)
    with h5py.File(a["nyu_mat"]) as fa, h5py.File(b["nyu_mat"]) as fb, h5py.File(c["nyu_mat"]) as fc:
        for key in ("images", "depths", "rawDepths"):
            assert np.array_equal(fa[key][()], fb[key][()])
        assert not np.array_equal(fa["images"][()], fc["images"][()])
    assert a["diw_test_csv"].read_text() == b["diw_test_csv"].read_text()
    assert (a["diw_root"] / "images/test/00001.png").read_bytes() == (
        b["diw_root"] / "images/test/00001.png"
    ).read_bytes()


def test_cli(tmp_path, capsys):
    argv = [
        "--out",
        str(tmp_path),
        "--frames",
        "4",
        "--height",
        "12",
        "--width",
        "16",
        "--diw-train",
        "1",
        "--diw-test",
        "1",
        "--seed",
        "2",
    ]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "nyu_mat:" in out.out and "done in" in out.out and "synthetic: nyu frames 4/4" in out.err
    assert (tmp_path / "nyu_depth_v2_labeled.mat").is_file()


def test_rejects_too_few_frames(tmp_path):
    with pytest.raises(ValueError, match="num_frames must be >= 2"):
        generate_synthetic(tmp_path, **{**TINY, "num_frames": 1})


def test_cli_keeps_a_current_dataset_and_regenerates_a_stale_one(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--frames", "4", "--height", "12", "--width", "16", "--diw-train", "1",
            "--diw-test", "1", "--quiet", "--keep-current"]
    assert main(argv) == 0 and "done in" in capsys.readouterr().out
    assert main(argv) == 0 and "kept" in capsys.readouterr().out
    assert main([*argv[:-2], "--seed", "3", "--quiet", "--keep-current"]) == 0
    assert "done in" in capsys.readouterr().out
