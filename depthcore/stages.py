"""The training stages as data: what each one trains on, reports and selects by.

Every list of stage names, metric names and directions in depthcore and the sweep comes from
here, so a stage is described once:

- ``nyu``: supervised depth on NYU Depth V2 with a per-pixel loss; validation reports the
  standard depth metrics; the best epoch is the one with the lowest ``val/rmse``.
- ``diw``: a ranking fine-tune of a stage-1 checkpoint on Depth-in-the-Wild point pairs;
  validation reports pair accuracy and WHDR; the best epoch has the lowest ``val/whdr``.

A metric's direction (lower or higher is better) is a property of the metric, not of the
stage: ``mode_of("val/d1") == "max"`` wherever it is used.
"""

from __future__ import annotations

from dataclasses import dataclass

# The metric names live here, not beside their formulas in depthcore.metrics: checking a config or a
# sweep spec needs the names, and should not import torch for them.
DEPTH_METRIC_KEYS: tuple[str, ...] = (
    "d1",
    "d2",
    "d3",
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "log10",
    "silog",
    "mse_norm",
)
ORDINAL_METRIC_KEYS: tuple[str, ...] = ("accuracy", "whdr")
"""Point-pair metrics (DIW): the share of pairs ordered as labelled, and its complement."""
HIGHER_IS_BETTER: frozenset[str] = frozenset({"d1", "d2", "d3", "accuracy"})
"""Metric names to maximise; every other metric here is an error to minimise."""


DEPTH_TASK = "depth"
"""Per-pixel metric depth: NYU-style ``.mat`` data, depth losses, depth metrics."""
ORDINAL_TASK = "ordinal"
"""Relative depth from point pairs: DIW-style CSV data, the ranking loss, accuracy / WHDR."""


@dataclass(frozen=True)
class Stage:
    name: str
    """The stage's name in configs (``train.stage``), specs (``stages:``) and tracking tags."""
    title: str
    """What it does, for people."""
    label: str
    """Its data set's short name in tables (``NYU``, ``DIW``)."""
    task: str
    """``DEPTH_TASK`` or ``ORDINAL_TASK``: which data, loss and evaluation the stage uses."""
    metrics: tuple[str, ...]
    """Validation metrics reported per epoch, with their ``val/`` prefix."""
    default_metric: str
    """The metric that picks the best epoch (and trial) unless a config or spec says otherwise."""
    shown: tuple[str, ...]
    """The metrics a summary table shows, selection metric aside."""
    finetunes: bool
    """Starts from a checkpoint of the previous stage (its model and weights), not from scratch."""
    fixed_loss: str | None
    """The loss the stage always trains with (None: ``train.loss`` chooses)."""

    @property
    def default_mode(self) -> str:
        return mode_of(self.default_metric)

    @property
    def test_metrics(self) -> tuple[str, ...]:
        """The same metrics on the test split (``test/...``)."""
        return tuple("test/" + m.removeprefix("val/") for m in self.metrics)


STAGES: dict[str, Stage] = {
    "nyu": Stage(
        name="nyu",
        title="depth training on NYU Depth V2",
        label="NYU",
        task=DEPTH_TASK,
        metrics=tuple(f"val/{k}" for k in DEPTH_METRIC_KEYS),
        default_metric="val/rmse",
        shown=("val/rmse", "val/abs_rel", "val/d1", "val/mse_norm"),
        finetunes=False,
        fixed_loss=None,
    ),
    "diw": Stage(
        name="diw",
        title="ranking fine-tune on Depth-in-the-Wild point pairs",
        label="DIW",
        task=ORDINAL_TASK,
        metrics=tuple(f"val/{k}" for k in ORDINAL_METRIC_KEYS),
        default_metric="val/whdr",
        shown=("val/accuracy", "val/whdr"),
        finetunes=True,
        fixed_loss="ranking",
    ),
}
"""Stages in the order they run."""

STAGE_NAMES: tuple[str, ...] = tuple(STAGES)
FIRST_STAGE: str = STAGE_NAMES[0]
DEPTH_STAGE: Stage = next(stage for stage in STAGES.values() if stage.task == DEPTH_TASK)
"""The stage that trains metric depth; evaluation results on its data are keyed by its name."""
ORDINAL_STAGE: Stage = next(stage for stage in STAGES.values() if stage.task == ORDINAL_TASK)
"""The stage that trains depth order from point pairs; its results are keyed by its name."""


def get_stage(name: str) -> Stage:
    """The stage called ``name``; an unknown name lists the valid ones."""
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; valid stages: {', '.join(STAGE_NAMES)}") from None


def mode_of(metric: str) -> str:
    """``"max"`` when a higher value of ``metric`` (``val/d1``, ``test/accuracy``, ``d1``) is better, else ``"min"``."""
    return "max" if metric.split("/")[-1] in HIGHER_IS_BETTER else "min"


def better(value: float, than: float, mode: str) -> bool:
    """Whether ``value`` beats ``than`` under ``mode`` (a NaN never beats, anything finite beats a NaN)."""
    if value != value:  # NaN
        return False
    if than != than:
        return True
    return value < than if mode == "min" else value > than


def worst(mode: str) -> float:
    """The starting point of a search for the best value under ``mode``."""
    return float("inf") if mode == "min" else float("-inf")
