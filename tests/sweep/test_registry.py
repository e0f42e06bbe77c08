"""@champion moves only to a better model selected on the same data, against a real MLflow registry."""

from __future__ import annotations

import os

import pytest
from mlflow import MlflowClient

from sweep.export.registry import (
    CHAMPION,
    TAG_DATA_DIGEST,
    TAG_SELECTION_METRIC,
    TAG_SELECTION_MODE,
    TAG_SELECTION_VALUE,
    champion_decision,
    data_digest,
)


def _tags(value: float, digest: str = "d1", metric: str = "val/rmse") -> dict[str, str]:
    return {TAG_DATA_DIGEST: digest, TAG_SELECTION_METRIC: metric, TAG_SELECTION_MODE: "min",
            TAG_SELECTION_VALUE: repr(value)}


@pytest.fixture
def registry(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("depthsweep-unetpp-nyu")
    return client, "depthsweep-unetpp-nyu", tmp_path


def _version(registry, tags: dict[str, str], promote: bool = False) -> tuple[bool, str]:
    """Register a version with ``tags`` and move the alias as register_model does."""
    client, name, tmp = registry
    source = tmp / "model"
    source.mkdir(exist_ok=True)
    version = client.create_model_version(name, source.as_uri(), tags=tags)
    moved, reason = champion_decision(client, name, tags, promote)
    if moved:
        client.set_registered_model_alias(name, CHAMPION, version.version)
    return moved, reason


def test_champion_moves_only_to_a_better_model_on_the_same_data(registry):
    client, name, _ = registry
    assert _version(registry, _tags(0.80)) == (True, "no champion yet")
    moved, reason = _version(registry, _tags(0.90))  # worse
    assert not moved and "does not beat version 1" in reason
    moved, reason = _version(registry, _tags(0.70))  # better
    assert moved and "beats version 1" in reason
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "3"


def test_a_model_selected_on_other_data_never_replaces_the_champion_unless_promoted(registry):
    client, name, _ = registry
    _version(registry, _tags(0.80, digest="real-nyu"))
    moved, reason = _version(registry, _tags(0.10, digest="synthetic"))  # far lower, but other data
    assert not moved and "other data" in reason and "--promote" in reason
    moved, reason = _version(registry, _tags(0.50, digest="real-nyu", metric="val/abs_rel"))
    assert not moved and "selected by val/rmse" in reason
    moved, reason = _version(registry, _tags(0.99, digest="synthetic"), promote=True)
    assert moved and reason.startswith("--promote")
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "4"


def test_the_data_digest_follows_the_content_and_the_split_not_the_path(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "nyu.mat").write_bytes(b"the same frames")
    config = {"data": {"nyu_path": str(tmp_path / "a" / "nyu.mat"), "size": [64, 64], "val_fraction": 0.1},
              "train": {"stage": "nyu"}}
    moved = {**config, "data": {**config["data"], "nyu_path": str(tmp_path / "b" / "nyu.mat")}}
    assert data_digest(config) == data_digest(moved)
    (tmp_path / "b" / "nyu.mat").write_bytes(b"other frames")
    assert data_digest(config) != data_digest(moved)
    assert data_digest(config) != data_digest({**config, "data": {**config["data"], "val_fraction": 0.2}})


def test_process_wide_stores_are_put_back(monkeypatch, tmp_path):
    # MLflow's setters write the environment too: after a registration, the caller's own store
    # (and its child processes') must be the one MLflow resolves again.
    import mlflow

    from sweep.export.loaded import process_wide_stores

    mine = f"sqlite:///{tmp_path / 'mine.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mine)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    with process_wide_stores(f"sqlite:///{tmp_path / 'sweep.db'}"):
        assert mlflow.get_registry_uri().endswith("sweep.db")
    assert os.environ["MLFLOW_TRACKING_URI"] == mine and "MLFLOW_REGISTRY_URI" not in os.environ
    assert mlflow.get_tracking_uri() == mine and mlflow.get_registry_uri() == mine
