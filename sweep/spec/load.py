"""Loading a sweep spec, in one direction: read the YAML, apply ``--set``, check, resolve.

``load_spec`` returns a :class:`~sweep.spec.model.SweepSpec` whose stages are merged once; every
mistake is a one-line :class:`~sweep.spec.check.SpecError` naming the file and key.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from depthcore.config import ConfigError, DataConfig, load_yaml
from depthcore.stages import FIRST_STAGE, STAGES
from sweep.spec import read
from sweep.spec.check import Checker, Entry, SpecError, check_stage_points, describe
from sweep.spec.model import (
    SECTIONS,
    DataSpec,
    ResourcesSpec,
    SchedulerSpec,
    StageSpec,
    StudySpec,
    SweepSpec,
    SyntheticSpec,
)


def load_spec(path: str | Path, overrides: list[str] | None = None, *, check_files: bool = True) -> SweepSpec:
    """Read, override and validate a sweep spec; raises :class:`SpecError` (one line) on a mistake.

    ``overrides`` are ``--set`` items ``key=value`` with ``.`` between spec levels and ``/``
    inside config keys (``space.optim/lr.high=1.0e-2``, ``fixed.train/epochs=2``); values are
    YAML (``1e-5`` means the number). ``check_files=False`` skips the existence of real data
    files (to validate a spec on a machine without the datasets).
    """
    path = Path(path)
    chk = Checker(str(path))
    try:
        raw = load_yaml(path)
    except ConfigError as err:
        raise SpecError(str(err)) from None
    read.resolve_paths(raw, path.resolve().parent)
    for item in overrides or []:
        read.apply_override(chk, raw, item)
    read.resolve_paths(raw, Path.cwd())
    return _build(chk, raw, path, check_files)


def _build(chk: Checker, raw: dict[str, Any], path: Path, check_files: bool) -> SweepSpec:
    chk.only_keys("", raw, SECTIONS, what="section")
    stages = read.parse_stages(chk, raw.get("stages"))
    fixed = read.parse_fixed(chk, "fixed", raw.get("fixed"))
    space = read.parse_space(chk, "space", raw.get("space"))
    conditional = read.parse_conditional(chk, raw.get("conditional"))
    read.check_relations(chk, fixed, space, stages, conditional)
    data = read.parse_data(chk, raw.get("data"), tuple(stages), check_files)
    synthetic = data.pop("synthetic")
    spec = SweepSpec(
        path=path.resolve(),
        study=StudySpec(**read.parse_study(chk, raw.get("study"), default_name=path.stem)),
        stages={name: StageSpec(**values) for name, values in stages.items()},
        fixed=fixed,
        space=space,
        conditional=conditional,
        scheduler=SchedulerSpec(**read.parse_scheduler(chk, raw.get("scheduler"))),
        resources=ResourcesSpec(**read.parse_resources(chk, raw.get("resources"))),
        data=DataSpec(synthetic=SyntheticSpec(**synthetic) if synthetic else None, **data),
        started=time.strftime("%Y%m%d-%H%M%S"),
    )
    for stage in spec.stages:
        _check_stage(chk, spec, stage)
    if spec.data.cache_size is None and FIRST_STAGE in spec.stages:
        size = spec.stage_fixed(FIRST_STAGE).get("data/size", DataConfig().size)
        spec = replace(spec, data=replace(spec.data, cache_size=list(size)))
    return spec


def _check_stage(chk: Checker, spec: SweepSpec, stage: str) -> None:
    base: dict[str, Entry] = {key: (value, f"data.{key.split('/')[1]}") for key, value in spec.data.paths().items()}
    base["train/stage"] = (stage, f"stages.{stage}")
    if STAGES[stage].finetunes:
        base["train/init_checkpoint"] = ("stage-1 checkpoint", f"stages.{stage}")
    check_stage_points(chk, base, *spec._parts(stage))
    if spec.scheduler.type == "asha" and spec.scheduler.grace_period > spec.max_epochs(stage):
        chk.fail(
            "scheduler.grace_period",
            f"at most the {spec.max_epochs(stage)} epochs of stage {stage}",
            describe(spec.scheduler.grace_period),
        )
