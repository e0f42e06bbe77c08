"""Every shipped search space loads, validates and yields valid trial configs (a new file is tested by existing)."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from depthcore.config import ExperimentConfig
from sweep.spec import family, load_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACES = sorted((Path(__file__).resolve().parents[2] / "search_spaces").glob("*.yaml"))


def test_the_shipped_search_spaces_are_found() -> None:
    assert {"quickstart", "unetpp", "lraspp", "compare"} <= {path.stem for path in SPACES}


@pytest.mark.parametrize("path", SPACES, ids=[path.stem for path in SPACES])
def test_search_space_loads_and_every_stage_samples_valid_configs(path: Path, tmp_path: Path) -> None:
    # Real-data specs point at datasets this machine may not have; everything else is checked.
    spec = load_spec(path, check_files=False)
    values = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
    assert not re.search(r"(?<![\d.])\d+[eE][+-]?\d", values), "write YAML floats as 1.0e-5"
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for stage in spec.stages:
        assert spec.scheduler.grace_period <= spec.max_epochs(stage)
        for _ in range(3):
            trial = study.ask()
            spec.sampler(stage)(trial)
            extra = {"train/out_dir": str(tmp_path), "train/init_checkpoint": str(tmp_path / "best")}
            cfg = ExperimentConfig.from_dict(spec.trial_config(stage, trial.params, **extra), source=str(path))
            assert cfg.train.stage == stage
            if stage == "nyu":
                assert family(cfg.model.name) in ("unetpp", "lraspp")


def test_quickstart_is_small_synthetic_and_on_cpu() -> None:
    spec = load_spec(Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart.yaml")
    assert spec.data.synthetic is not None and spec.resources.gpu == 0
    assert list(spec.stages) == ["nyu", "diw"] and spec.study.timestamp
    assert {family(name) for name in spec.space["model/name"].choices} == {"unetpp", "lraspp"}
    assert max(spec.data.cache_size or [0]) <= 96
