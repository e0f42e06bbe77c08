"""sweep.spec: every bad spec is one line naming the file and key (the table of bad specs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from spec_texts import BASE, REAL_DATA, lr_space, make_real_data, spec_text, write

from sweep.spec import SpecError, load_spec

# (id, spec text, --set overrides, fragments the one-line message must contain)
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
        ["space.model/name.choices: expected a model name (dpt, dpt_7m, lraspp,", "found string 'unet'"],
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
