"""Tests for sweep.space: spec loading and validation, overrides, samplers and trial configs."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution

from depthcore.config import ExperimentConfig
from sweep.space import SpecError, SweepSpec, family, load_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A valid spec, one YAML text per section; cases replace sections (None removes one).
BASE = {
    "study": "name: unit\nn_startup_trials: 2",
    "data": "synthetic: {out: generated, frames: 8, height: 32, width: 32}",
    "fixed": "data/size: [32, 32]\ntrain/epochs: 3\ntrain/threads: 1",
    "space": (
        "optim/lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "model/name: {type: categorical, choices: [unetpp, lraspp]}\n"
        "data/batch_size: {type: int, low: 2, high: 8, step: 2}"
    ),
    "conditional": (
        "model/name:\n"
        "  unetpp: {model/args/encoder: {type: categorical, choices: [mobilenet_v2, resnet18]}}\n"
        "  lraspp: {model/args/size: {type: categorical, choices: [large, small]}}"
    ),
    "stages": "nyu: {num_samples: 4}\ndiw: {num_samples: 2, top_k: 1, fixed: {train/epochs: 2}}",
    "scheduler": "type: asha\ngrace_period: 1\nreduction_factor: 2",
    "resources": "cpu: 1\ngpu: 0",
}
REAL_DATA = "nyu_path: nyu/nyu.mat\ndiw_root: diw\ndiw_train_csv: diw/DIW_train_val.csv\ndiw_test_csv: diw/DIW_test.csv"


def spec_text(**sections: str | None) -> str:
    """The base spec with some sections replaced; a section's text is indented under its name."""
    merged = {**BASE, **sections}
    return "".join(
        f"{name}:\n" + "".join(f"  {line}\n" for line in text.splitlines())
        for name, text in merged.items()
        if text is not None
    )


def write(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def make_real_data(root: Path) -> None:
    for relative in ("nyu/nyu.mat", "diw/DIW_train_val.csv", "diw/DIW_test.csv"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("")


def lr_space(body: str) -> str:
    return BASE["space"].replace("{type: float, low: 1.0e-4, high: 1.0e-2, log: true}", body)


# --- errors --------------------------------------------------------------------------------------

BAD = [
    (
        "malformed_yaml",
        "study:\n  name: t\n  seed: 0\nspace:\n  optim/lr: {type: float, low: 1.0e-4\nfixed: {}\n",
        [],
        ["spec.yaml: line 6 invalid YAML"],
    ),
    (
        "unknown_section",
        spec_text(spaces="{}"),
        [],
        [
            "spec.yaml: spaces: expected a section (study, data, fixed, space, conditional, stages, scheduler, resources)",
            "found an unknown section",
        ],
    ),
    (
        "unknown_key_lists_valid",
        spec_text(study="name: unit\nmax_concurent: 2"),
        [],
        ["study.max_concurent: expected a key of study (name, seed, max_concurrent, time_budget_s", "an unknown key"],
    ),
    (
        "key_not_in_config",
        spec_text(space="optim/lrr: {type: float, low: 1.0e-4, high: 1.0e-2}"),
        [],
        [
            "space.optim/lrr: expected a key of the depthcore optim section (optim/name, optim/lr,",
            "found string 'optim/lrr'",
        ],
    ),
    (
        "section_not_in_config",
        spec_text(fixed="optm/lr: 1.0e-3"),
        [],
        ["fixed.optm/lr: expected a depthcore config key <section>/<name> with section model, data, optim, train"],
    ),
    (
        "low_not_below_high",
        spec_text(space=lr_space("{type: float, low: 1.0e-2, high: 1.0e-4}")),
        [],
        ["space.optim/lr: expected low < high, found low 0.01, high 0.0001"],
    ),
    (
        "log_low_not_positive",
        spec_text(space=lr_space("{type: float, low: 0.0, high: 1.0e-2, log: true}")),
        [],
        ["space.optim/lr.low: expected low > 0 with log: true, found number 0.0"],
    ),
    (
        "yaml_1e-5_is_a_string",
        spec_text(space=lr_space("{type: float, low: 1e-5, high: 1.0e-2, log: true}")),
        [],
        ["space.optim/lr.low: expected a number, found string '1e-5' (PyYAML reads 1e-5 as a string: write 1.0e-5)"],
    ),
    (
        "yaml_1e-5_in_fixed",
        spec_text(fixed="optim/weight_decay: 1e-5"),
        [],
        ["fixed.optim/weight_decay: expected a number", "1.0e-5"],
    ),
    (
        "unknown_distribution_type",
        spec_text(space=lr_space("{type: uniform, low: 1.0e-4, high: 1.0e-2}")),
        [],
        ["space.optim/lr.type: expected float, int or categorical, found string 'uniform'"],
    ),
    (
        "missing_distribution_field",
        spec_text(space=lr_space("{type: float, low: 1.0e-4}")),
        [],
        ["space.optim/lr.high: expected a number, found nothing"],
    ),
    (
        "unknown_distribution_field",
        spec_text(space=lr_space("{type: float, low: 1.0e-4, high: 1.0, logg: true}")),
        [],
        ["space.optim/lr.logg: expected a field of space.optim/lr (type, low, high, log, step)"],
    ),
    (
        "not_a_distribution",
        spec_text(space="train/loss: [mse, l1]"),
        [],
        ["space.train/loss: expected a distribution such as {type: float", "found list"],
    ),
    (
        "int_range_not_multiple_of_step",
        spec_text(space="data/batch_size: {type: int, low: 2, high: 9, step: 2}"),
        [],
        ["space.data/batch_size.high: expected low plus a multiple of step 2 (e.g. 8), found integer 9"],
    ),
    (
        "list_choice",
        spec_text(space="data/size: {type: categorical, choices: [[32, 32], [64, 64]]}"),
        [],
        ["space.data/size.choices[0]: expected null, a boolean, a number or a string, found list"],
    ),
    (
        "wrong_value_type_for_config",
        spec_text(
            space=BASE["space"].replace("{type: int, low: 2, high: 8, step: 2}", "{type: float, low: 2.0, high: 8.0}")
        ),
        [],
        ["space.data/batch_size.low: expected an integer, found float 2.0"],
    ),
    (
        "bad_choice_for_config",
        spec_text(space=BASE["space"] + "\ntrain/loss: {type: categorical, choices: [mse, huber]}"),
        [],
        ["space.train/loss.choices: expected one of mse, l1, silog, mse_norm, found 'huber'"],
    ),
    (
        "fixed_value_out_of_range",
        spec_text(fixed="data/num_workers: -1"),
        [],
        ["fixed.data/num_workers: expected >= 0, found -1"],
    ),
    (
        "unknown_model",
        spec_text(space="model/name: {type: categorical, choices: [unetpp, unet]}", conditional=None),
        [],
        ["space.model/name.choices: expected a model name (lraspp, lraspp_16m,", "found string 'unet'"],
    ),
    (
        "unknown_encoder",
        spec_text(conditional=BASE["conditional"].replace("resnet18", "resnet999")),
        [],
        ["conditional.model/name.unetpp.model/args/encoder.choices: unknown U-Net++ encoder 'resnet999'"],
    ),
    (
        "argument_of_another_model",
        spec_text(fixed="model/args/encoder: resnet18", conditional=None),
        [],
        [
            "fixed.model/args/encoder: expected an argument of model 'lraspp' (size, width_mult, pretrained, bn_momentum)",
            "put it under conditional: model/name",
        ],
    ),
    (
        "interacting_model_arguments",
        spec_text(
            space="model/name: {type: categorical, choices: [lraspp_3m, lraspp_7m]}\n"
            "model/args/pretrained: {type: categorical, choices: [false, true]}",
            conditional=None,
        ),
        [],
        ["space.model/args/pretrained.choices: ImageNet weights exist only for width_mult=1.0", "model lraspp_7m"],
    ),
    (
        "conditional_parent_not_categorical",
        spec_text(conditional="optim/lr:\n  0.001: {optim/momentum: {type: float, low: 0.5, high: 0.9}}"),
        [],
        [
            "conditional.optim/lr: expected a categorical parameter of space or stages.<stage>.space",
            "found a float distribution",
        ],
    ),
    (
        "conditional_parent_missing",
        spec_text(conditional="optim/name:\n  sgd: {optim/momentum: {type: float, low: 0.5, high: 0.9}}"),
        [],
        ["conditional.optim/name: expected a categorical parameter", "found no parameter of that name"],
    ),
    (
        "conditional_branch_not_a_choice",
        spec_text(conditional=BASE["conditional"].replace("lraspp:", "lraspp_3m:")),
        [],
        ["conditional.model/name.lraspp_3m: expected a branch named after a choice of model/name (unetpp, lraspp)"],
    ),
    (
        "conditional_key_also_searched",
        spec_text(
            space=BASE["space"] + "\nmodel/args/pretrained: {type: categorical, choices: [false]}",
            conditional="model/name:\n  unetpp: {model/args/pretrained: {type: categorical, choices: [true]}}",
        ),
        [],
        [
            "conditional.model/name.unetpp.model/args/pretrained: expected a key set only under its branch",
            "found it in space too",
        ],
    ),
    (
        "fixed_and_searched",
        spec_text(fixed="optim/lr: 1.0e-3"),
        [],
        ["space.optim/lr: expected a key not also in fixed, found it in both"],
    ),
    (
        "reserved_key",
        spec_text(fixed="data/nyu_path: x.mat"),
        [],
        ["fixed.data/nyu_path: expected a key the sweep does not set itself (set it in the data section)"],
    ),
    (
        "diw_cannot_search_the_model",
        spec_text(stages="nyu: {}\ndiw: {space: {model/name: {type: categorical, choices: [unetpp]}}}"),
        [],
        ["stages.diw.space.model/name: expected no model/* or train/loss key"],
    ),
    ("diw_needs_nyu", spec_text(stages="diw: {}"), [], ["stages: expected stage nyu as well", "found only diw"]),
    (
        "top_k_only_for_diw",
        spec_text(stages="nyu: {top_k: 2}"),
        [],
        ["stages.nyu.top_k: expected a key of stages.nyu (metric, mode, num_samples, fixed, space)"],
    ),
    (
        "top_k_per_architecture_is_a_boolean",
        spec_text(stages="nyu: {}\ndiw: {top_k_per_architecture: sometimes}"),
        [],
        ["stages.diw.top_k_per_architecture: expected", "found string 'sometimes'"],
    ),
    (
        "mode_against_metric",
        spec_text(stages="nyu: {metric: val/d1, mode: min}"),
        [],
        ["stages.nyu.mode: expected max for val/d1 (higher is better), found string 'min'"],
    ),
    (
        "unknown_metric",
        spec_text(stages="nyu: {metric: val/whdr}"),
        [],
        ["stages.nyu.metric: expected one of val/d1,", "found string 'val/whdr'"],
    ),
    (
        "grace_beyond_epochs",
        spec_text(scheduler="grace_period: 3"),
        [],
        ["scheduler.grace_period: expected at most the 2 epochs of stage diw, found integer 3"],
    ),
    ("negative_gpu", spec_text(resources="gpu: -1"), [], ["resources.gpu: expected a number >= 0, found integer -1"]),
    ("no_data", spec_text(data=None), [], ["data: expected a data section", "found nothing"]),
    (
        "synthetic_and_real",
        spec_text(data="synthetic: {out: g}\nnyu_path: a.mat"),
        [],
        ["data.synthetic: expected either synthetic or real data paths, found both (data.nyu_path)"],
    ),
    (
        "real_data_missing_key",
        spec_text(data="nyu_path: nyu/nyu.mat"),
        [],
        ["data.diw_root: expected a path for stage diw"],
    ),
    (
        "missing_data_file",
        spec_text(data=REAL_DATA.replace("nyu/nyu.mat", "nyu/missing.mat")),
        [],
        ["data.nyu_path: expected an existing file, found no file at ", "nyu/missing.mat"],
    ),
    (
        "override_is_validated",
        spec_text(),
        ["study.max_concurrent=0"],
        ["study.max_concurrent: expected an integer >= 1, found integer 0"],
    ),
    (
        "override_into_a_distribution",
        spec_text(),
        ["space.optim/lr.low=-1.0"],
        ["space.optim/lr.low: expected low > 0 with log: true, found number -1.0"],
    ),
    (
        "override_without_value",
        spec_text(),
        ["study.max_concurrent"],
        ["--set study.max_concurrent: expected key=value, found no '='"],
    ),
    (
        "override_through_a_value",
        spec_text(),
        ["study.name.x=1"],
        ["--set study.name.x: expected study.name to be a mapping, found string 'unit'"],
    ),
]


@pytest.mark.parametrize(("text", "overrides", "fragments"), [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_spec_is_one_line_naming_the_key(
    tmp_path: Path, text: str, overrides: list[str], fragments: list[str]
) -> None:
    make_real_data(tmp_path)
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message, message


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
