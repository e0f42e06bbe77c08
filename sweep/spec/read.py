"""Raw-spec steps of ``sweep.spec.load_spec``: paths, ``--set`` overrides and section readers.

Each ``parse_*`` returns the keyword arguments of the matching dataclass in ``sweep.spec.model``
(or plain dicts for ``fixed``, ``space`` and ``conditional``), failing with a one-line
:class:`~sweep.spec.check.SpecError` that names the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, check_distribution_compatibility

from depthcore.config import flatten, parse_override
from depthcore.stages import DEPTH_TASK, FIRST_STAGE, ORDINAL_TASK, STAGE_NAMES, STAGES, mode_of
from sweep.redact import secret_in
from sweep.spec.check import DATA_PATHS, Checker, check_config_key, describe, dist_to_dict, join, parse_distribution

SYNTHETIC_KEYS = ("out", "frames", "height", "width", "diw_train", "diw_test", "seed")
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def stage_drops(stage: str, key: str) -> bool:
    """Whether ``stage`` ignores ``key``: a fine-tuning stage trains the checkpoint's model
    (``model/*``), and a stage with a fixed loss ignores ``train/loss``."""
    own = STAGES[stage]
    return (own.finetunes and key.startswith("model/")) or (own.fixed_loss is not None and key == "train/loss")


def _drops_reason(stage: str) -> str:
    own = STAGES[stage]
    return (f"no model/* or train/loss key (stage {stage} fine-tunes the stage-1 model with the "
            f"{own.fixed_loss} loss)")


# Spec keys holding paths; relative ones are relative to the spec file (or, from --set, the
# current folder).
_PATH_KEYS = [("data", name) for name in DATA_PATHS] + [
    ("data", "synthetic", "out"),
    ("study", "output_dir"),
]


def resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the relative paths of a raw spec absolute against ``base``, in place."""
    for keys in _PATH_KEYS:
        node: Any = raw
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
            node[keys[-1]] = str((base / Path(node[keys[-1]]).expanduser()).resolve())
    study = raw.get("study")
    prefix = "sqlite:///"  # an Optuna storage URL whose database file may be relative
    if isinstance(study, dict) and isinstance(study.get("storage"), str) and study["storage"].startswith(prefix):
        database = Path(study["storage"][len(prefix) :])
        if not database.is_absolute():
            study["storage"] = prefix + str((base / database).resolve())


def apply_override(chk: Checker, raw: dict[str, Any], item: str) -> None:
    """Apply one ``--set`` item (``space.optim/lr.high=1.0e-2``) to a raw spec, in place."""
    if "=" not in item:
        chk.fail(f"--set {item}", "key=value", "no '='")
    key, value = parse_override(item)
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            chk.fail(f"--set {key}", f"{'.'.join(parts[: depth + 1])} to be a mapping", describe(node))
    node[parts[-1]] = value


def parse_study(chk: Checker, raw: Any, default_name: str) -> dict[str, Any]:
    raw = chk.mapping("study", raw)
    chk.only_keys(
        "study",
        raw,
        ("name", "seed", "max_concurrent", "time_budget_s", "storage", "output_dir", "timestamp", "n_startup_trials"),
    )
    name = chk.string("study.name", raw.get("name", default_name))
    if not _STUDY_NAME.match(name):
        chk.fail("study.name", "letters, digits and _ . - (it names folders and runs)", describe(name))
    output_dir = raw.get("output_dir")
    storage = chk.optional(chk.string, "study.storage", raw.get("storage"))
    secret = secret_in(storage) if storage else None
    if secret is not None:
        # The value is not repeated: it holds the secret.
        chk.fail_with("study.storage", f"holds a {secret}; a spec records no credentials: give the URL without it "
                      "and the password in PGPASSWORD or a password file (PGPASSFILE, default ~/.pgpass)")
    return {
        "name": name,
        "seed": chk.integer("study.seed", raw.get("seed", 0)),
        "max_concurrent": chk.integer("study.max_concurrent", raw.get("max_concurrent", 1), minimum=1),
        "time_budget_s": chk.optional(chk.number, "study.time_budget_s", raw.get("time_budget_s"), above=0),
        "storage": storage,
        # Not in the file: relative to where the sweep is started, like a --set path.
        "output_dir": chk.string("study.output_dir", output_dir)
        if output_dir is not None
        else str(Path("runs/sweeps").resolve()),
        "timestamp": chk.boolean("study.timestamp", raw.get("timestamp", False)),
        "n_startup_trials": chk.integer("study.n_startup_trials", raw.get("n_startup_trials", 10), minimum=0),
    }


def parse_data(chk: Checker, raw: Any, stages: tuple[str, ...], check_files: bool) -> dict[str, Any]:
    if raw is None:
        chk.fail("data", "a data section with synthetic: {out: ...} or real paths (nyu_path, ...)", "nothing")
    raw = chk.mapping("data", raw)
    chk.only_keys("data", raw, ("synthetic", *DATA_PATHS, "cache_size"))
    cache_size = raw.get("cache_size")
    if cache_size is not None and (
        not isinstance(cache_size, list)
        or len(cache_size) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 8 for s in cache_size)
    ):
        chk.fail("data.cache_size", "[H, W] with integers >= 8, or null", describe(cache_size))
    paths = {name: chk.optional(chk.string, f"data.{name}", raw.get(name)) for name in DATA_PATHS}
    given = [name for name, path in paths.items() if path is not None]
    if "synthetic" in raw:
        if given:
            chk.fail("data.synthetic", "either synthetic or real data paths", f"both (data.{given[0]})")
        return {"synthetic": _parse_synthetic(chk, raw["synthetic"]), **paths, "cache_size": cache_size}
    needed = {DEPTH_TASK: ("nyu_path",), ORDINAL_TASK: ("diw_root", "diw_train_csv")}
    for stage in stages:
        for name in needed[STAGES[stage].task]:
            if paths[name] is None:
                chk.fail(
                    f"data.{name}", f"a path for stage {stage} (or data.synthetic instead of real paths)", "nothing"
                )
    if check_files:
        for name, kind, path in missing_data_paths(paths):
            chk.fail(f"data.{name}", f"an existing {kind}", f"no {kind} at {path}")
    return {"synthetic": None, **paths, "cache_size": cache_size}


def missing_data_paths(paths: Mapping[str, str | None]) -> list[tuple[str, str, str]]:
    """``(key, "file" or "folder", path)`` of each real-data path in ``paths`` (keys of
    ``DATA_PATHS``) that names no existing file or folder of its kind."""
    missing = []
    for name, path in paths.items():
        kind = DATA_PATHS[name]
        if path is not None and not (Path(path).is_dir() if kind == "folder" else Path(path).is_file()):
            missing.append((name, kind, path))
    return missing


def _parse_synthetic(chk: Checker, raw: Any) -> dict[str, Any]:
    raw = chk.mapping("data.synthetic", raw, allow_null=False)
    chk.only_keys("data.synthetic", raw, SYNTHETIC_KEYS)
    if "out" not in raw:
        chk.fail("data.synthetic.out", "the folder to write the synthetic dataset to", "nothing")
    minimum = {"frames": 2, "height": 8, "width": 8, "diw_train": 1, "diw_test": 1, "seed": 0}
    values = {
        name: chk.optional(chk.integer, f"data.synthetic.{name}", raw.get(name), minimum=low)
        for name, low in minimum.items()
    }
    return {"out": chk.string("data.synthetic.out", raw["out"]), **values}


def parse_fixed(chk: Checker, key: str, raw: Any) -> dict[str, Any]:
    """Flat ``{"train/epochs": 2, ...}``; nested mappings (``train: {epochs: 2}``) are flattened."""
    # An empty mapping sets nothing; kept, it would wipe sampled keys below it when Ray unflattens.
    fixed = {name: value for name, value in flatten(chk.mapping(key, raw)).items() if value != {}}
    for name in fixed:
        check_config_key(chk, join(key, name), name)
    return fixed


def parse_space(chk: Checker, key: str, raw: Any) -> dict[str, BaseDistribution]:
    space = {}
    for name, dist in chk.mapping(key, raw).items():
        check_config_key(chk, join(key, name), name)
        space[name] = parse_distribution(chk, join(key, name), dist)
    return space


def parse_conditional(chk: Checker, raw: Any) -> dict[str, dict[Any, dict[str, BaseDistribution]]]:
    conditional: dict[str, dict[Any, dict[str, BaseDistribution]]] = {}
    for parent, branches in chk.mapping("conditional", raw).items():
        check_config_key(chk, join("conditional", parent), parent)
        key = join("conditional", parent)
        conditional[parent] = {
            value: parse_space(chk, join(key, value), params)
            for value, params in chk.mapping(key, branches, allow_null=False).items()
        }
    return conditional


def parse_stages(chk: Checker, raw: Any) -> dict[str, dict[str, Any]]:
    """Stage settings in run order; no ``stages`` section means both stages with defaults."""
    raw = {stage: None for stage in STAGE_NAMES} if raw is None else chk.mapping("stages", raw)
    chk.only_keys("stages", raw, STAGE_NAMES, what="stage")
    if not raw:
        chk.fail("stages", f"at least one stage ({', '.join(STAGE_NAMES)})", "none")
    for stage in raw:
        if STAGES[stage].finetunes and FIRST_STAGE not in raw:
            chk.fail("stages", f"stage {FIRST_STAGE} as well ({stage} fine-tunes its top-k checkpoints)",
                     f"only {', '.join(raw)}")
    return {stage: _parse_stage(chk, stage, raw[stage]) for stage in STAGE_NAMES if stage in raw}


def _parse_stage(chk: Checker, stage: str, raw: Any) -> dict[str, Any]:
    key = f"stages.{stage}"
    finetunes = STAGES[stage].finetunes
    raw = chk.mapping(key, raw)
    chk.only_keys(
        key, raw,
        ("metric", "mode", "num_samples", "fixed", "space", *(("top_k", "top_k_per_architecture") if finetunes else ())),
    )
    metric = chk.string(f"{key}.metric", raw.get("metric", STAGES[stage].default_metric), choices=STAGES[stage].metrics)
    better = mode_of(metric)
    mode = chk.string(f"{key}.mode", raw.get("mode", better), choices=("min", "max"))
    if mode != better:
        chk.fail(
            f"{key}.mode",
            f"{better} for {metric} ({'higher' if better == 'max' else 'lower'} is better)",
            describe(mode),
        )
    fixed, space = (
        parse_fixed(chk, f"{key}.fixed", raw.get("fixed")),
        parse_space(chk, f"{key}.space", raw.get("space")),
    )
    for name in [*fixed, *space]:
        if stage_drops(stage, name):
            where = f"{key}.fixed" if name in fixed else f"{key}.space"
            chk.fail(join(where, name), _drops_reason(stage), describe(name))
    return {
        "name": stage,
        "metric": metric,
        "mode": mode,
        "num_samples": chk.integer(f"{key}.num_samples", raw.get("num_samples", 10), minimum=1),
        "fixed": fixed,
        "space": space,
        "top_k": chk.integer(f"{key}.top_k", raw.get("top_k", 2), minimum=1) if finetunes else None,
        "top_k_per_architecture": (
            chk.boolean(f"{key}.top_k_per_architecture", raw.get("top_k_per_architecture", True)) if finetunes
            else False
        ),
    }


def parse_scheduler(chk: Checker, raw: Any) -> dict[str, Any]:
    raw = chk.mapping("scheduler", raw)
    chk.only_keys("scheduler", raw, ("type", "grace_period", "reduction_factor", "max_epochs"))
    return {
        "type": chk.string("scheduler.type", raw.get("type", "asha"), choices=("asha", "fifo")),
        "grace_period": chk.integer("scheduler.grace_period", raw.get("grace_period", 1), minimum=1),
        "reduction_factor": chk.number("scheduler.reduction_factor", raw.get("reduction_factor", 3), above=1),
        "max_epochs": chk.optional(chk.integer, "scheduler.max_epochs", raw.get("max_epochs"), minimum=1),
    }


def parse_resources(chk: Checker, raw: Any) -> dict[str, Any]:
    raw = chk.mapping("resources", raw)
    chk.only_keys("resources", raw, ("cpu", "gpu"))
    return {
        "cpu": chk.number("resources.cpu", raw.get("cpu", 1), above=0),
        "gpu": chk.number("resources.gpu", raw.get("gpu", 0), at_least=0),
    }


def check_relations(
    chk: Checker,
    fixed: dict[str, Any],
    space: dict[str, BaseDistribution],
    stages: dict[str, dict[str, Any]],
    conditional: dict[str, dict[Any, dict[str, BaseDistribution]]],
) -> None:
    """Keys set twice at one level, conditional parents, branch values and shared branch keys."""
    levels = [("", fixed, space)] + [(f"stages.{s}.", st["fixed"], st["space"]) for s, st in stages.items()]
    for prefix, level_fixed, level_space in levels:
        for name in level_space:
            if name in level_fixed:
                chk.fail(f"{prefix}space.{name}", f"a key not also in {prefix}fixed", "it in both")
    searched = [(f"{prefix}space", level_space) for prefix, _, level_space in levels]
    elsewhere = [(f"{prefix}fixed", level_fixed) for prefix, level_fixed, _ in levels] + searched
    seen: dict[str, tuple[str, BaseDistribution]] = {}
    for parent, branches in conditional.items():
        parent_key = join("conditional", parent)
        definitions = [dist for _, level in searched for name, dist in level.items() if name == parent]
        if not definitions or not all(isinstance(d, CategoricalDistribution) for d in definitions):
            found = (
                f"a {dist_to_dict(definitions[0])['type']} distribution" if definitions else "no parameter of that name"
            )
            chk.fail(parent_key, "a categorical parameter of space or stages.<stage>.space", found)
        choices = [c for d in definitions for c in d.choices]
        for value, params in branches.items():
            if value not in choices:
                chk.fail(
                    join(parent_key, value),
                    f"a branch named after a choice of {parent} ({', '.join(map(str, dict.fromkeys(choices)))})",
                    describe(value),
                )
            for name, dist in params.items():
                key = join(join(parent_key, value), name)
                for where, level in elsewhere:
                    if name in level:
                        chk.fail(key, "a key set only under its branch", f"it in {where} too")
                if name == parent or name in conditional:
                    chk.fail(key, "a key that is not itself a conditional parent", describe(name))
                if name in seen:
                    try:
                        check_distribution_compatibility(seen[name][1], dist)
                    except ValueError as err:
                        chk.fail(key, f"a distribution Optuna can share with {seen[name][0]}", f"one it cannot: {err}")
                seen.setdefault(name, (key, dist))
