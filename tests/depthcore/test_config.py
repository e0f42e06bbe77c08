"""Config parsing: good files load, each kind of mistake is one line naming the key."""

from __future__ import annotations

import pytest
import torch

from depthcore.config import ConfigError, ExperimentConfig, parse_override

GOOD = {"model": {"name": "lraspp", "args": {"size": "small"}}, "data": {"nyu_path": "x.mat"}}


def test_defaults_and_roundtrip():
    cfg = ExperimentConfig.from_dict(GOOD)
    assert cfg.optim.lr == pytest.approx(1.0e-3)
    again = ExperimentConfig.from_dict(cfg.to_dict())
    assert again == cfg
    flat = cfg.flat()
    assert flat["optim/lr"] == cfg.optim.lr and flat["model/args/size"] == "small"
    # Plain types only: what torch's safe loader and YAML accept.
    torch.save(cfg.to_dict(), "/dev/null")


@pytest.mark.parametrize(
    "patch, needle",
    [
        ({"optim": {"lrr": 0.1}}, "optim.lrr: unknown key; valid keys in optim:"),
        ({"optim": {"lr": "1e-5"}}, "PyYAML reads 1e-5 as a string"),
        ({"optim": {"lr": -1.0}}, "optim.lr: expected > 0"),
        ({"optim": {"schedule": "step"}}, "optim.schedule: expected one of onecycle, cosine, constant"),
        ({"train": {"epochs": 2.5}}, "train.epochs: expected an integer"),
        ({"train": {"amp": "yes"}}, "train.amp: expected true or false"),
        ({"data": {"size": [200]}}, "data.size: expected [H, W]"),
        ({"model": {"name": "resnet"}}, "model.name: unknown model 'resnet'; valid names:"),
        ({"model": {"name": "unetpp", "args": {"encoderr": "x"}}}, "model.args.encoderr: model 'unetpp' has no argument"),
        ({"train": {"stage": "diw"}}, "train.init_checkpoint: stage 'diw' needs a stage-1 checkpoint"),
        ({"extra": 1}, "extra: unknown key; valid keys in config: data, model, optim, train"),
    ],
)
def test_errors_name_the_key(patch, needle):
    raw = {k: dict(v) for k, v in GOOD.items()}
    for section, values in patch.items():
        if isinstance(values, dict) and section in raw:
            raw[section] = {**raw[section], **values}
        else:
            raw[section] = values
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict(raw, source="my.yaml")
    message = str(info.value)
    assert message.startswith("my.yaml: ") and needle in message
    assert "\n" not in message


def test_from_file_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: lraspp\ndata:\n  nyu_path: a.mat\noptim:\n  lr: 1.0e-2\n")
    cfg = ExperimentConfig.from_file(path, ["optim.lr=1e-4", "train.epochs=3", "model.args.size=small"])
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.train.epochs == 3 and cfg.model.args == {"size": "small"}


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name: lraspp\n optim: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+ invalid YAML"):
        ExperimentConfig.from_file(path)


def test_override_needs_equals():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("optim.lr")


def test_relative_paths_resolve_against_the_file(tmp_path):
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "c.yaml"
    path.write_text("data:\n  nyu_path: ../data/nyu.h5\ntrain:\n  out_dir: runs/x\n")
    cfg = ExperimentConfig.from_file(path, ["data.split_file=rel/splits.mat"])
    assert cfg.data.nyu_path == str(tmp_path / "data" / "nyu.h5")
    # Command-line values and the output folder stay relative to where the command runs.
    assert cfg.data.split_file == "rel/splits.mat" and cfg.train.out_dir == "runs/x"


def test_the_config_and_stage_modules_import_no_torch():
    # What checks a config or names a stage's metrics needs no torch (seconds of import in every
    # process that only validates); depthcore.metrics takes the names from depthcore.stages.
    import subprocess
    import sys

    code = "import sys, depthcore.config, depthcore.stages; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
