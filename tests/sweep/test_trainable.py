"""The trial config: sampled parameters, spec values and the trial's CPU share."""

from __future__ import annotations

import yaml
from sweep_fixtures import TINY_SPEC

from sweep.spec import load_spec
from sweep.trial import TrialContext, build_trial_config


def _context(tmp_path, cpu: int, fixed: dict | None = None) -> TrialContext:
    raw = yaml.safe_load(TINY_SPEC)
    raw["resources"]["cpu"] = cpu
    raw["fixed"].update(fixed or {})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    spec = load_spec(path, check_files=False)
    return TrialContext(spec=spec, stage="nyu", tracking_uri="unused", experiment_id="0", parent_run_id="p",
                        threads=cpu, study_name="tiny", data_paths=spec.data.paths())


def test_trial_config_follows_the_cpu_share(tmp_path):
    params = {"model": {"name": "lraspp_3m"}, "optim": {"lr": 0.003}}
    cfg, lineage = build_trial_config(_context(tmp_path, cpu=4), params, str(tmp_path / "out"))
    assert (cfg.train.threads, cfg.data.num_workers) == (4, 3)
    assert cfg.model.name == "lraspp_3m" and cfg.optim.lr == 0.003 and cfg.data.size == [32, 32]
    assert cfg.train.out_dir == str(tmp_path / "out") and lineage == {}
    one, _ = build_trial_config(_context(tmp_path, cpu=1), params, str(tmp_path / "out"))
    assert (one.train.threads, one.data.num_workers) == (1, 0)
    # A value the spec sets wins.
    fixed, _ = build_trial_config(_context(tmp_path, cpu=4, fixed={"data/num_workers": 1}), params, str(tmp_path))
    assert fixed.data.num_workers == 1


def test_each_model_gets_a_first_trial(tmp_path):
    from sweep.study import STAGE1_PARAM, model_first_points

    ctx = _context(tmp_path, cpu=1)
    assert model_first_points(ctx.spec, "nyu") == [{"model/name": "unetpp_3m"}, {"model/name": "lraspp_3m"}]
    assert model_first_points(ctx.spec, "diw") == []  # no stage-1 checkpoints given
    # Stage 2: the best stage-1 checkpoint of each architecture (rows arrive best first).
    stage1 = {"a": {"architecture": "U-Net++"}, "b": {"architecture": "U-Net++"}, "c": {"architecture": "LR-ASPP"}}
    assert model_first_points(ctx.spec, "diw", stage1) == [{STAGE1_PARAM: "a"}, {STAGE1_PARAM: "c"}]
    raw = yaml.safe_load(TINY_SPEC)
    raw["stages"]["nyu"]["num_samples"] = 1  # fewer trials than models: TPE decides
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(raw))
    assert model_first_points(load_spec(tmp_path / "one.yaml", check_files=False), "nyu") == []
