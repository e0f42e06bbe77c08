"""The NYU cache's identity: a stale cache is never used, and a killed preparation leaves no cache."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from depthcore.data import NyuDepthV2, generate_synthetic
from depthcore.data.cache import cache_mismatch, cache_path_for, ensure_nyu_cache, source_fingerprint

REPO = Path(__file__).resolve().parents[2]
SIZE = (16, 16)
SMALL = dict(num_frames=16, height=24, width=32, diw_train=2, diw_test=2)


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory) -> tuple[dict[str, Path], dict[str, Path]]:
    """Two different datasets whose files have the same names."""
    return tuple(  # type: ignore[return-value]
        generate_synthetic(tmp_path_factory.mktemp(f"seed{seed}"), progress=False, seed=seed, **SMALL)
        for seed in (0, 1)
    )


def _first_image(cache: Path) -> np.ndarray:
    with h5py.File(cache, "r") as f:
        return f["images"][0]


def test_a_different_file_with_the_same_name_gets_its_own_cache(two_datasets, tmp_path):
    a, b = two_datasets
    assert a["nyu_mat"].name == b["nyu_mat"].name and a["nyu_mat"].read_bytes() != b["nyu_mat"].read_bytes()
    folder = tmp_path / "cache"
    source = tmp_path / "data" / a["nyu_mat"].name
    source.parent.mkdir()
    shutil.copy(a["nyu_mat"], source)
    first = ensure_nyu_cache(source, SIZE, a["split_file"], folder, progress=False)
    # The same path now holds another dataset (a user swapped the download): a new cache.
    shutil.copy(b["nyu_mat"], source)
    second = ensure_nyu_cache(source, SIZE, a["split_file"], folder, progress=False)
    assert second != first and first.is_file() and second.is_file()
    from_b = NyuDepthV2(b["nyu_mat"], "train", size=SIZE, split_file=a["split_file"])
    assert from_b.source == "mat"
    with h5py.File(second, "r") as f:
        assert f.attrs["source_fingerprint"] == source_fingerprint(b["nyu_mat"])
    assert not np.array_equal(_first_image(first), _first_image(second))
    # Size and split are part of the key too.
    assert cache_path_for(source, (24, 16), a["split_file"], folder) != second
    assert cache_path_for(source, SIZE, b["split_file"], folder) != second
    assert cache_path_for(source, SIZE, None, folder) != second


def test_the_key_follows_content_not_time_or_place(two_datasets, tmp_path):
    a, _ = two_datasets
    copy = tmp_path / "elsewhere" / a["nyu_mat"].name
    copy.parent.mkdir()
    shutil.copy(a["nyu_mat"], copy)  # a new mtime, another folder: the same file
    os.utime(copy, ns=(1, 1))
    folder = tmp_path / "cache"
    assert cache_path_for(copy, SIZE, None, folder) == cache_path_for(a["nyu_mat"], SIZE, None, folder)
    # One changed byte in the middle of the file changes the key (small files are hashed whole).
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert cache_path_for(copy, SIZE, None, folder) != cache_path_for(a["nyu_mat"], SIZE, None, folder)


def test_a_cache_whose_recorded_identity_differs_is_rebuilt(two_datasets, tmp_path, capsys):
    a, b = two_datasets
    folder = tmp_path / "cache"
    path = cache_path_for(a["nyu_mat"], SIZE, a["split_file"], folder)
    # Put b's cache under a's name: right file name, wrong content.
    stale = ensure_nyu_cache(b["nyu_mat"], SIZE, a["split_file"], tmp_path / "other", progress=False)
    folder.mkdir()
    shutil.copy(stale, path)
    reason = cache_mismatch(path, a["nyu_mat"], SIZE, a["split_file"])
    assert reason is not None and reason.startswith("source_fingerprint: expected")
    rebuilt = ensure_nyu_cache(a["nyu_mat"], SIZE, a["split_file"], folder, progress=False)
    assert rebuilt == path
    assert "rebuilding the NYU cache" in capsys.readouterr().err
    assert cache_mismatch(rebuilt, a["nyu_mat"], SIZE, a["split_file"]) is None
    assert not np.array_equal(_first_image(rebuilt), _first_image(stale))
    # A matching cache is reused as it is.
    mtime = rebuilt.stat().st_mtime_ns
    assert ensure_nyu_cache(a["nyu_mat"], SIZE, a["split_file"], folder, progress=False) == rebuilt
    assert rebuilt.stat().st_mtime_ns == mtime


# A child process that prepares a cache and stops mid-way (after its first chunk of frames),
# where the test kills it. Replacing the frame reader is fault injection, nothing is mocked.
_SLOW_PREPARE = """
import sys, time
from pathlib import Path
import depthcore.data.cache as cache
real = cache.read_mat_frames
def reader(*args, **kwargs):
    out = real(*args, **kwargs)
    Path(sys.argv[3]).write_text("writing")
    time.sleep(600)
    return out
cache.read_mat_frames = reader
cache.CHUNK_FRAMES = 4
cache.prepare_nyu_cache(sys.argv[1], sys.argv[2], size=(16, 16), split_file=sys.argv[4], progress=False)
"""


def test_kill_during_preparation_leaves_no_cache(two_datasets, tmp_path):
    a, _ = two_datasets
    out = tmp_path / "cache" / "nyu_16.h5"
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", _SLOW_PREPARE, str(a["nyu_mat"]), str(out), str(marker),
                              str(a["split_file"])],
                             env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "the child never started writing"
            time.sleep(0.1)
        leftovers = list(out.parent.glob(f".{out.name}.*.tmp"))
        assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # it was writing
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not out.exists()
    assert leftovers[0].exists()  # the dead process's temporary file, not at the final path
    from depthcore.data import prepare_nyu_cache

    prepare_nyu_cache(a["nyu_mat"], out, size=SIZE, split_file=a["split_file"], progress=False)
    assert len(NyuDepthV2(out, "train", size=SIZE)) > 0
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # the leftover is gone


def test_prepare_cli_cache_dir_reuses_a_matching_cache(two_datasets, tmp_path, capsys):
    from depthcore.data.prepare import main as prepare_main

    a, _ = two_datasets
    argv = ["nyu", "--src", str(a["nyu_mat"]), "--cache-dir", str(tmp_path / "c"), "--size", "16", "16",
            "--split-file", str(a["split_file"]), "--quiet"]
    assert prepare_main(argv) == 0
    path = cache_path_for(a["nyu_mat"], SIZE, a["split_file"], tmp_path / "c")
    assert str(path) in capsys.readouterr().out
    mtime = path.stat().st_mtime_ns
    assert prepare_main(argv) == 0
    assert path.stat().st_mtime_ns == mtime and sorted((tmp_path / "c").iterdir()) == [path]
