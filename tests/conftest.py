"""Shared fixtures: one tiny synthetic NYU + DIW dataset per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

# Small enough to generate in about a second, large enough for a split by scene with
# non-empty train / val / test and a few DIW batches.
SYNTHETIC_SETTINGS = dict(num_frames=32, height=48, width=64, diw_train=16, diw_test=8, seed=0)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of a generated dataset: nyu_mat, split_file, diw_root, diw_train_csv, diw_test_csv."""
    from depthcore.data import generate_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic(out, progress=False, **SYNTHETIC_SETTINGS)
