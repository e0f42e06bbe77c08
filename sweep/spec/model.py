"""Sweep specs: a YAML file -> validated dataclasses, Optuna samplers and depthcore configs.

A spec has the sections ``study``, ``data``, ``fixed``, ``space``, ``conditional``, ``stages``,
``scheduler`` and ``resources`` (see ``search_spaces/*.yaml``). Parameters are depthcore config
keys written with ``/`` (``optim/lr``, ``model/args/encoder``); ``space`` holds Optuna
distributions in short form (``{type: float, low: 1.0e-5, high: 1.0e-2, log: true}``).
Everything is checked on load, before any compute: each key against the depthcore config,
each model with ``depthcore.models.check_model_args``, and a config built from the fixed
values plus every end and choice of every distribution.

Stages run in the order ``nyu`` (supervised depth) then ``diw`` (ranking fine-tune of the top-k
stage-1 checkpoints). A stage searches the global ``space`` plus its own and trains with the
global ``fixed`` plus its own; a stage's entry for a key replaces the global one. Stage ``diw``
fine-tunes the stage-1 model with the ranking loss, so it drops ``model/*`` and ``train/loss``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import Trial

from depthcore.config import TrainConfig, flatten, set_dotted
from depthcore.data.synthetic import synthetic_paths
from depthcore.models import model_family
from sweep.spec.check import DATA_PATHS, Entry, dist_to_dict, representatives
from sweep.spec.read import stage_drops

SECTIONS = ("study", "data", "fixed", "space", "conditional", "stages", "scheduler", "resources")

Conditional = dict[str, dict[Any, dict[str, BaseDistribution]]]
"""``{parent key: {parent value: {key: distribution}}}``: parameters that exist on one branch."""

StageParts = tuple[dict[str, Entry], dict[str, Entry], dict[str, dict[Any, dict[str, Entry]]]]
"""A stage's fixed values, distributions and conditional branches, each ``(value, spec key)``."""


@dataclass(frozen=True)
class StudySpec:
    name: str
    """Study name (default: the spec file's stem); names the output folder and tracking runs."""
    seed: int
    """Seeds the TPE sampler; trials get ``train/seed`` from ``fixed`` (or a search over it)."""
    max_concurrent: int
    """Trials running at once (each takes ``resources``)."""
    time_budget_s: float | None
    """Wall-clock limit in seconds for the whole sweep, both stages; null: none."""
    storage: str | None
    """Optuna storage URL (``sqlite:///study.db``, relative to the spec file); null: in memory."""
    output_dir: str
    """Absolute folder for trial outputs and results (default ``runs/sweeps`` in the current folder)."""
    timestamp: bool
    """Append ``-YYYYmmdd-HHMMSS`` to the name, so every run of the spec is a new study."""
    n_startup_trials: int
    """Random trials before TPE starts modelling (per stage)."""


@dataclass(frozen=True)
class StageSpec:
    name: str
    """``nyu`` or ``diw``; also the trials' ``train/stage``."""
    metric: str
    """Metric ranked by the scheduler and the search (nyu: ``val/rmse``, diw: ``val/whdr``)."""
    mode: str
    """``min`` or ``max``, following the metric."""
    num_samples: int
    """Trials in this stage."""
    fixed: dict[str, Any]
    """Stage-only constants (flat ``/`` keys); they replace global ``fixed`` and ``space`` entries."""
    space: dict[str, BaseDistribution]
    """Stage-only distributions; they replace global ``space`` and ``fixed`` entries."""
    top_k: int | None
    """Stage ``diw``: how many best stage-1 checkpoints are fine-tuned; None for ``nyu``."""
    top_k_per_architecture: bool = False
    """Stage ``diw``: ``top_k`` best per architecture (the default for diw: every architecture
    reaches stage 2 even when one dominates stage 1), or ``top_k`` overall."""


@dataclass(frozen=True)
class SchedulerSpec:
    type: str
    """``asha`` (stop poor trials early) or ``fifo`` (run every trial to the end)."""
    grace_period: int
    """ASHA: epochs every trial runs before it can be stopped."""
    reduction_factor: float
    """ASHA: keep about 1 / reduction_factor of the trials at each rung."""
    max_epochs: int | None
    """ASHA's ``max_t``; None: each stage's ``train/epochs`` (see ``SweepSpec.max_epochs``)."""


@dataclass(frozen=True)
class ResourcesSpec:
    cpu: float
    """CPUs per trial (> 0; 1 or more keeps data loading from starving)."""
    gpu: float
    """GPUs per trial (>= 0; fractions share a GPU between trials)."""


@dataclass(frozen=True)
class SyntheticSpec:
    out: str
    """Absolute folder ``depthcore.data.generate_synthetic`` writes to."""
    frames: int | None
    """NYU-like frames; None: the generator's default (as for the fields below)."""
    height: int | None
    """Frame height in pixels."""
    width: int | None
    """Frame width in pixels."""
    diw_train: int | None
    """Images in ``DIW_train_val.csv``."""
    diw_test: int | None
    """Images in ``DIW_test.csv``."""
    seed: int | None
    """Generator seed."""

    def generator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``generate_synthetic`` (unset ones left to its defaults)."""
        names = {
            "frames": "num_frames",
            "height": "height",
            "width": "width",
            "diw_train": "diw_train",
            "diw_test": "diw_test",
            "seed": "seed",
        }
        values = {arg: getattr(self, name) for name, arg in names.items() if getattr(self, name) is not None}
        return {"out_dir": self.out, **values}


@dataclass(frozen=True)
class DataSpec:
    synthetic: SyntheticSpec | None
    """Generate a synthetic dataset before the sweep; mutually exclusive with the real paths."""
    nyu_path: str | None
    """Absolute path of ``nyu_depth_v2_labeled.mat`` (or a prepared cache); needed by stage nyu."""
    split_file: str | None
    """Absolute path of a ``splits.mat``; None: the official split shipped with depthcore."""
    diw_root: str | None
    """Folder the DIW CSV image paths are relative to; needed by stage diw."""
    diw_train_csv: str | None
    """``DIW_train_val.csv``; needed by stage diw."""
    diw_test_csv: str | None
    """``DIW_test.csv`` (test evaluation only)."""
    cache_size: list[int] | None
    """``[H, W]`` of the resized NYU cache prepared once for all trials (default: stage nyu's
    ``data/size``); None only when there is no stage nyu."""

    def paths(self) -> dict[str, str]:
        """Flat ``{"data/nyu_path": ..., ...}`` for the trial configs (synthetic: the generator's files)."""
        if self.synthetic is not None:
            found = synthetic_paths(self.synthetic.out)
            return {f"data/{name}": str(path) for name, path in found.items()}
        return {f"data/{name}": getattr(self, name) for name in DATA_PATHS if getattr(self, name)}


@dataclass(frozen=True)
class StageSampler:
    """Define-by-run search space of one stage, for ``ray.tune.search.optuna.OptunaSearch(space=...)``.

    Called with an Optuna trial, it suggests every parameter of the stage (a conditional one
    only on its parent's branch) and returns the stage's constants, which Ray merges into the
    trial's config (flat ``/`` keys, which Ray nests).
    """

    space: dict[str, BaseDistribution]
    """Parameters suggested for every trial, in order."""
    conditional: Conditional
    """Parameters suggested only when their parent took the branch's value."""
    constants: dict[str, Any]
    """The stage's fixed values."""

    def __call__(self, trial: Trial) -> dict[str, Any]:
        values = {key: suggest(trial, key, dist) for key, dist in self.space.items()}
        for parent, branches in self.conditional.items():
            for key, dist in branches.get(values[parent], {}).items():
                suggest(trial, key, dist)
        return copy.deepcopy(self.constants)


def suggest(trial: Trial, name: str, dist: BaseDistribution) -> Any:
    """Suggest through ``trial.suggest_*`` (Ray records the values by wrapping those methods)."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    """Absolute path of the spec file."""
    study: StudySpec
    """Name, seed, concurrency, budget, storage and output folder."""
    stages: dict[str, StageSpec]
    """Stages to run, in order (``nyu`` then ``diw``)."""
    fixed: dict[str, Any]
    """Constants for every stage, flat ``/`` keys (``{"train/epochs": 30}``)."""
    space: dict[str, BaseDistribution]
    """Distributions for every stage, by ``/`` key."""
    conditional: Conditional
    """Parameters that exist only on one value of a categorical parent."""
    scheduler: SchedulerSpec
    """Early stopping (ASHA) or none (FIFO)."""
    resources: ResourcesSpec
    """CPU and GPU per trial."""
    data: DataSpec
    """Where the datasets are, or how to generate them."""
    started: str
    """``YYYYmmdd-HHMMSS`` when the spec was loaded (the study-name suffix with ``timestamp``)."""
    _resolved: dict[str, StageParts] = field(init=False, repr=False, compare=False)
    """Per stage: global and stage settings merged once, each entry with the spec key it came from."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_resolved", {stage: self._merge(stage) for stage in self.stages})

    def resolved_name(self) -> str:
        """The study name, with ``-YYYYmmdd-HHMMSS`` when ``study.timestamp`` is true."""
        return f"{self.study.name}-{self.started}" if self.study.timestamp else self.study.name

    def stage_fixed(self, stage: str) -> dict[str, Any]:
        """Constants of ``stage`` (flat ``/`` keys): global ``fixed`` overlaid with the stage's."""
        return {key: value for key, (value, _) in self._parts(stage)[0].items()}

    def stage_space(self, stage: str) -> dict[str, BaseDistribution]:
        """Distributions every trial of ``stage`` samples (conditional ones not included)."""
        return {key: dist for key, (dist, _) in self._parts(stage)[1].items()}

    def stage_conditional(self, stage: str) -> Conditional:
        """Conditional parameters of ``stage``, for the parents it samples."""
        return {
            parent: {value: {key: dist for key, (dist, _) in params.items()} for value, params in branches.items()}
            for parent, branches in self._parts(stage)[2].items()
        }

    def sampler(self, stage: str, extra_space: Mapping[str, BaseDistribution] | None = None) -> StageSampler:
        """Define-by-run function for ``OptunaSearch(space=...)``; ``extra_space`` adds parameters
        known only at run time (e.g. ``train/init_checkpoint`` over the top-k stage-1 checkpoints)."""
        space = {**self.stage_space(stage), **(extra_space or {})}
        constants = {key: value for key, value in self.stage_fixed(stage).items() if key not in space}
        return StageSampler(space, self.stage_conditional(stage), constants)

    def trial_config(self, stage: str, params: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        """Nested raw config for ``ExperimentConfig.from_dict``.

        Layers, later ones winning: the stage's fixed values, the data paths, ``params`` (flat
        ``/`` keys or nested, as Ray passes them) and ``extra`` (flat ``/`` keys such as
        ``train/out_dir``); ``train/stage`` is ``stage``.
        """
        self._stage(stage)
        layers = [self.stage_fixed(stage), self.data.paths(), flatten(dict(params)), flatten(dict(extra))]
        raw: dict[str, Any] = {}
        for layer in layers:
            for key, value in layer.items():
                set_dotted(raw, key, copy.deepcopy(value))
        set_dotted(raw, "train/stage", stage)
        return raw

    def max_epochs(self, stage: str) -> int:
        """ASHA's ``max_t`` for ``stage``: ``scheduler.max_epochs``, else the most ``train/epochs`` a trial runs."""
        if self.scheduler.max_epochs is not None:
            return self.scheduler.max_epochs
        dist = self.stage_space(stage).get("train/epochs")
        if isinstance(dist, (IntDistribution, CategoricalDistribution)):
            return int(max(value for value, _ in representatives(dist)))
        return int(self.stage_fixed(stage).get("train/epochs", TrainConfig.epochs))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the resolved spec (for ``--dry-run`` and tracking)."""

        def spaces(space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
            return {key: dist_to_dict(dist) for key, dist in space.items()}

        stages = {name: {**asdict(stage), "space": spaces(stage.space)} for name, stage in self.stages.items()}
        return {
            "path": str(self.path),
            "name": self.resolved_name(),
            "study": asdict(self.study),
            "data": asdict(self.data),
            "fixed": copy.deepcopy(self.fixed),
            "space": spaces(self.space),
            "conditional": {
                parent: {value: spaces(params) for value, params in branches.items()}
                for parent, branches in self.conditional.items()
            },
            "stages": stages,
            "scheduler": asdict(self.scheduler),
            "resources": asdict(self.resources),
        }

    def _stage(self, stage: str) -> StageSpec:
        if stage not in self.stages:
            raise KeyError(f"unknown stage {stage!r}; this spec has: {', '.join(self.stages)}")
        return self.stages[stage]

    def _parts(self, stage: str) -> StageParts:
        """Fixed values, distributions and conditional branches of ``stage``, each with its spec key."""
        self._stage(stage)
        return self._resolved[stage]

    def _merge(self, stage: str) -> StageParts:
        own = self.stages[stage]
        kept = {key: value for key, value in self.fixed.items() if not stage_drops(stage, key)}
        fixed = {key: (value, f"fixed.{key}") for key, value in kept.items() if key not in own.space}
        fixed.update({key: (value, f"stages.{stage}.fixed.{key}") for key, value in own.fixed.items()})
        space = {
            key: (dist, f"space.{key}")
            for key, dist in self.space.items()
            if key not in own.fixed and not stage_drops(stage, key)
        }
        space.update({key: (dist, f"stages.{stage}.space.{key}") for key, dist in own.space.items()})
        conditional: dict[str, dict[Any, dict[str, Entry]]] = {}
        for parent, branches in self.conditional.items():
            labelled = {
                value: {key: (dist, f"conditional.{parent}.{value}.{key}") for key, dist in params.items()}
                for value, params in branches.items()
            }
            if parent in space:
                conditional[parent] = labelled
            elif parent in fixed:
                # A stage that fixes the parent searches that branch's parameters unconditionally.
                space.update(labelled.get(fixed[parent][0], {}))
        return fixed, space, conditional


def family(model_name: str) -> str:
    """Architecture family of a registered model (presets map to their builder): ``depthcore.models.model_family``."""
    return model_family(model_name)


