"""Tests for sweep.spec: spec loading and validation, overrides, samplers and trial configs."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from spec_texts import BASE, make_real_data, spec_text, write

from depthcore.config import ExperimentConfig
from sweep.spec import SpecError, SweepSpec, family, load_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)
# --- good specs ----------------------------------------------------------------------------------


def test_base_spec_loads_with_defaults_and_resolved_paths(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path / "specs", spec_text()))
    assert spec.path == (tmp_path / "specs" / "spec.yaml").resolve()
    assert spec.data.synthetic is not None and spec.data.synthetic.out == str(
        (tmp_path / "specs" / "generated").resolve()
    )
    assert spec.data.paths()["data/diw_train_csv"].endswith("generated/diw/DIW_train_val.csv")
    assert spec.data.cache_size == [32, 32]  # the trials' data/size
    assert spec.space["optim/lr"] == FloatDistribution(1.0e-4, 1.0e-2, log=True)
    assert list(spec.stages) == ["nyu", "diw"]
    nyu, diw = spec.stages["nyu"], spec.stages["diw"]
    assert (nyu.metric, nyu.mode, nyu.top_k) == ("val/rmse", "min", None)
    assert (diw.metric, diw.mode, diw.top_k, diw.num_samples) == ("val/whdr", "min", 1, 2)
    assert diw.top_k_per_architecture and not nyu.top_k_per_architecture  # the default for diw
    assert (spec.max_epochs("nyu"), spec.max_epochs("diw")) == (3, 2)
    assert spec.study.n_startup_trials == 2 and spec.resources.cpu == 1.0
    assert spec.resolved_name() == "unit"
    yaml.safe_dump(spec.to_dict())  # plain data all the way down
    assert spec.to_dict()["space"]["data/batch_size"] == {"type": "int", "low": 2, "high": 8, "log": False, "step": 2}


def test_overrides_apply_after_the_file_and_resolve_paths_against_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "specs", spec_text())
    monkeypatch.chdir(tmp_path)
    spec = load_spec(
        path,
        [
            "stages.nyu.num_samples=3",
            "fixed.train/epochs=5",
            "space.optim/lr.high=1e-3",
            "data.synthetic.out=here",
            "study.timestamp=true",
        ],
    )
    assert spec.stages["nyu"].num_samples == 3
    assert spec.fixed["train/epochs"] == 5 and spec.max_epochs("nyu") == 5
    assert spec.space["optim/lr"].high == pytest.approx(1.0e-3)  # "1e-3" on the command line is a number
    assert spec.data.synthetic is not None and spec.data.synthetic.out == str((tmp_path / "here").resolve())
    assert re.fullmatch(r"unit-\d{8}-\d{6}", spec.resolved_name())


def test_set_takes_a_config_key_with_slashes_or_dots(tmp_path: Path) -> None:
    """``fixed.train/epochs=2`` and ``fixed.train.epochs=2`` are one override; inside, the key is ``train/epochs``."""
    path = write(tmp_path, spec_text())
    slashes = load_spec(path, ["fixed.train/epochs=2", "stages.nyu.fixed.optim/lr=0.01"])
    dots = load_spec(path, ["fixed.train.epochs=2", "stages.nyu.fixed.optim.lr=0.01"])
    assert slashes.fixed == dots.fixed and slashes.fixed["train/epochs"] == 2
    assert slashes.stage_fixed("nyu") == dots.stage_fixed("nyu") and dots.stage_fixed("nyu")["optim/lr"] == 0.01


def test_real_data_paths_resolve_against_the_spec_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_real_data(tmp_path / "data")
    data = (
        "nyu_path: ../data/nyu/nyu.mat\ndiw_root: ../data/diw\ndiw_train_csv: ../data/diw/DIW_train_val.csv\n"
        "cache_size: [48, 64]"
    )
    text = spec_text(data=data, study="name: unit\nstorage: sqlite:///../study.db")
    path = write(tmp_path / "specs", text)
    monkeypatch.chdir(tmp_path / "data")  # the current folder must not matter
    spec = load_spec(path)
    assert spec.data.nyu_path == str((tmp_path / "data" / "nyu" / "nyu.mat").resolve())
    assert spec.data.diw_root == str((tmp_path / "data" / "diw").resolve())
    assert spec.data.cache_size == [48, 64] and spec.data.synthetic is None
    assert spec.study.storage == f"sqlite:///{(tmp_path / 'study.db').resolve()}"
    # Without the files, check_files=False still loads (for specs written for another machine).
    moved = write(tmp_path / "elsewhere" / "specs", text)
    with pytest.raises(SpecError, match="data.nyu_path"):
        load_spec(moved)
    assert load_spec(moved, check_files=False).data.nyu_path.endswith("nyu/nyu.mat")


def test_stage_entries_replace_global_ones_and_diw_drops_the_model(tmp_path: Path) -> None:
    stages = (
        "nyu:\n  fixed: {optim/lr: 1.0e-3}\n"
        "diw:\n  space: {train/epochs: {type: int, low: 1, high: 4}}\n  fixed: {data/batch_size: 4}"
    )
    spec = load_spec(write(tmp_path, spec_text(stages=stages, fixed=BASE["fixed"] + "\ntrain/loss: l1")))
    assert "optim/lr" not in spec.stage_space("nyu") and spec.stage_fixed("nyu")["optim/lr"] == 1.0e-3
    assert set(spec.stage_conditional("nyu")) == {"model/name"}
    diw_space = spec.stage_space("diw")
    assert set(diw_space) == {"optim/lr", "train/epochs"}  # no model/name, and batch size fixed here
    assert "train/epochs" not in spec.stage_fixed("diw") and spec.max_epochs("diw") == 4
    assert not any(k.startswith("model/") or k == "train/loss" for k in spec.stage_fixed("diw"))
    assert spec.stage_conditional("diw") == {}


def test_a_stage_fixing_the_parent_searches_that_branch(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, spec_text(stages="nyu: {fixed: {model/name: lraspp}}")))
    assert spec.stage_space("nyu")["model/args/size"] == CategoricalDistribution(["large", "small"])
    assert "model/args/encoder" not in spec.stage_space("nyu") and spec.stage_conditional("nyu") == {}


def test_fixed_may_be_nested_like_a_depthcore_config(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, spec_text(fixed="train: {epochs: 2}\nmodel: {args: {}}\ndata/size: [32, 32]")))
    assert spec.fixed == {"train/epochs": 2, "data/size": [32, 32]}  # an empty mapping sets nothing


def test_family_maps_presets_to_their_builder() -> None:
    assert [family(n) for n in ("unetpp", "lraspp", "unetpp_3m", "lraspp_16m")] == ["unetpp", "lraspp"] * 2
    with pytest.raises(KeyError, match="valid names"):
        family("unet")


# --- sampler and trial configs -------------------------------------------------------------------


def run_sampler(spec: SweepSpec, stage: str, seed: int, trials: int = 12) -> list[dict]:
    """Params of ``trials`` TPE trials (TPE takes over after 3) with a made-up objective."""
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=3))
    sample = spec.sampler(stage)
    out = []
    for _ in range(trials):
        trial = study.ask()
        constants = sample(trial)
        assert constants == spec.stage_fixed(stage)
        out.append(dict(trial.params))
        study.tell(trial, trial.params["optim/lr"] + (trial.params.get("model/name") == "lraspp"))
    return out


def test_sampler_suggests_conditional_params_only_on_their_branch_and_is_seeded(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, spec_text()))
    params = run_sampler(spec, "nyu", seed=0)
    names = {p["model/name"] for p in params}
    assert names == {"unetpp", "lraspp"}
    for p in params:
        branch = {"unetpp": "model/args/encoder", "lraspp": "model/args/size"}
        assert set(p) == {"optim/lr", "model/name", "data/batch_size", branch[p["model/name"]]}
        assert p["data/batch_size"] in (2, 4, 6, 8) and 1.0e-4 <= p["optim/lr"] <= 1.0e-2
    assert run_sampler(spec, "nyu", seed=0) == params
    assert run_sampler(spec, "nyu", seed=1) != params
    assert all(set(p) == {"optim/lr", "data/batch_size"} for p in run_sampler(spec, "diw", seed=0, trials=3))


def test_trial_config_is_a_valid_experiment_config(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, spec_text()))
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for stage in ("nyu", "diw"):
        trial = study.ask()
        spec.sampler(stage)(trial)
        extra = {"train/out_dir": str(tmp_path / "trial"), "train/init_checkpoint": str(tmp_path / "best")}
        raw = spec.trial_config(stage, trial.params, **extra)
        cfg = ExperimentConfig.from_dict(raw)
        assert cfg.train.stage == stage and cfg.train.out_dir == str(tmp_path / "trial")
        assert cfg.optim.lr == trial.params["optim/lr"] and cfg.data.size == [32, 32]
        assert cfg.data.nyu_path == spec.data.paths()["data/nyu_path"]
        assert cfg.train.epochs == (3 if stage == "nyu" else 2)
        if stage == "nyu":
            assert cfg.model.name == trial.params["model/name"]
            assert set(cfg.model.args) == {k.split("/")[2] for k in trial.params if k.startswith("model/args/")}
    # Ray hands the parameters over nested; the result is the same.
    nested = {"optim": {"lr": 1.0e-3}, "model": {"name": "lraspp", "args": {"size": "small"}}}
    flat = {"optim/lr": 1.0e-3, "model/name": "lraspp", "model/args/size": "small"}
    assert spec.trial_config("nyu", nested) == spec.trial_config("nyu", flat)
    with pytest.raises(KeyError, match="nyu, diw"):
        spec.trial_config("test", flat)


def test_sampler_takes_run_time_parameters(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, spec_text()))
    checkpoints = CategoricalDistribution([str(tmp_path / "a"), str(tmp_path / "b")])
    trial = optuna.create_study().ask()
    spec.sampler("diw", extra_space={"train/init_checkpoint": checkpoints})(trial)
    assert trial.params["train/init_checkpoint"] in checkpoints.choices


def test_ray_optuna_search_accepts_the_sampler(tmp_path: Path) -> None:
    OptunaSearch = pytest.importorskip("ray.tune.search.optuna").OptunaSearch
    spec = load_spec(write(tmp_path, spec_text()))
    searcher = OptunaSearch(
        space=spec.sampler("nyu"), metric="val/rmse", mode="min", sampler=optuna.samplers.TPESampler(seed=0)
    )
    config = searcher.suggest("trial_1")
    assert config["train"]["epochs"] == 3 and "lr" in config["optim"]  # constants and samples, nested
    cfg = ExperimentConfig.from_dict(spec.trial_config("nyu", config))
    assert cfg.model.name in ("unetpp", "lraspp") and cfg.train.threads == 1
