"""Every shipped search space loads, validates and yields valid trial configs (a new file is tested by existing)."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from depthcore.config import ExperimentConfig
from depthcore.models import list_families, model_family
from sweep.spec import load_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACES = sorted((Path(__file__).resolve().parents[2] / "search_spaces").glob("*.yaml"))


def test_the_shipped_search_spaces_are_found() -> None:
    assert {"quickstart", "unetpp", "lraspp", "compare", "compare_quick"} <= {path.stem for path in SPACES}


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
                assert model_family(cfg.model.name) in list_families()


def test_quickstart_is_small_synthetic_and_on_cpu() -> None:
    spec = load_spec(Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart.yaml")
    assert spec.data.synthetic is not None and spec.resources.gpu == 0
    assert list(spec.stages) == ["nyu", "diw"] and spec.study.timestamp
    assert {model_family(name) for name in spec.space["model/name"].choices} == {"unetpp", "lraspp"}
    assert max(spec.data.cache_size or [0]) <= 96


def test_quickstart_validation_is_large_enough_to_select_on() -> None:
    """About 80 validation frames (a third of the non-test frames, by scene) and 200 DIW pairs; every
    sampled value comes from the seeded start-up trials, so the trials do not depend on timing."""
    from depthcore.data.synthetic import TEST_FRACTION

    spec = load_spec(Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart.yaml")
    fixed, synthetic = spec.stage_fixed("nyu"), spec.data.synthetic
    assert synthetic is not None and synthetic.frames and synthetic.diw_train
    assert fixed["data/val_fraction"] * synthetic.frames * (1 - TEST_FRACTION) >= 80
    assert round(fixed["data/diw_val_fraction"] * synthetic.diw_train) >= 200
    assert all(stage.num_samples <= spec.study.n_startup_trials for stage in spec.stages.values())


def _spec(stem: str):
    return load_spec(Path(__file__).resolve().parents[2] / "search_spaces" / f"{stem}.yaml", check_files=False)


def test_compare_searches_every_family_at_matched_sizes() -> None:
    names = _spec("compare").space["model/name"].choices
    assert {model_family(name) for name in names} == set(list_families())
    sizes = {name.rsplit("_", 1)[1] for name in names}
    assert all(len({model_family(n) for n in names if n.endswith("_" + size)}) >= 3 for size in sizes)


def test_compare_quick_is_three_families_at_one_size_on_synthetic_cpu_data() -> None:
    spec = _spec("compare_quick")
    assert spec.data.synthetic is not None and spec.resources.gpu == 0
    assert list(spec.stages) == ["nyu", "diw"] and spec.study.timestamp
    names = spec.space["model/name"].choices
    assert {model_family(name) for name in names} == {"unetpp", "lraspp", "segformer"}
    assert {name.rsplit("_", 1)[1] for name in names} == {"3m"}
    # The quickstart's dataset (one generated folder for both, not regenerated in turn) and recipe,
    # one trial per family and stage.
    quickstart = _spec("quickstart")
    assert spec.data.synthetic == quickstart.data.synthetic
    assert spec.stage_fixed("nyu") == quickstart.stage_fixed("nyu")
    assert spec.stages["nyu"].num_samples == spec.stages["diw"].num_samples == len(names)
    assert max(spec.data.cache_size or [0]) <= 96
