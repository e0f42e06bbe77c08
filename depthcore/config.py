"""Training configuration: validated dataclasses loaded from YAML.

A config has four sections, ``model``, ``data``, ``optim`` and ``train``; every field
is documented where it is declared and checked on construction, so a typo or a
value of the wrong type is a one-line :class:`~depthcore.errors.ConfigError` naming the key.
Keys are addressed by dotted paths (``optim.lr``, ``model.args.encoder``); the sweep
uses the same paths with ``/`` (``optim/lr``).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from depthcore._registry import MODELS
from depthcore.errors import ConfigError as ConfigError  # re-exported: its home is depthcore.errors
from depthcore.stages import DEPTH_TASK, FIRST_STAGE, ORDINAL_TASK, STAGES, mode_of

_FLOAT_LIKE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")


@dataclass
class ModelConfig:
    name: str = "unetpp"
    """Registry name of the model (``depthcore.models.list_models()``)."""
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the model builder, e.g. ``{encoder: resnet18}``."""

    def __post_init__(self) -> None:
        # Import here: the models package registers its builders on import.
        from depthcore.models import list_models

        if self.name not in list_models():
            raise ConfigError(
                f"model.name: unknown model {self.name!r}; valid names: {', '.join(list_models())}"
            )
        signature = inspect.signature(MODELS.get(self.name))
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        if not accepts_any:
            valid = [n for n in signature.parameters]
            for key in self.args:
                if key not in valid:
                    raise ConfigError(
                        f"model.args.{key}: model {self.name!r} has no argument {key!r}; "
                        f"valid arguments: {', '.join(valid)}"
                    )


@dataclass
class DataConfig:
    nyu_path: str | None = None
    """NYU Depth V2 labeled ``.mat`` or a cache written by ``depthcore.data.prepare``."""
    split_file: str | None = None
    """A ``splits.mat`` with 1-based ``trainNdxs``/``testNdxs``; None: the official split."""
    scheme: Literal["official", "seed_random"] = "official"
    """``official`` 795/654 split with validation carved by scene, or the seed's 70/15/15."""
    depth: Literal["filled", "raw"] = "filled"
    """Training target: in-painted ``depths`` or raw Kinect ``rawDepths`` (holes masked)."""
    size: list[int] = field(default_factory=lambda: [200, 200])
    """Training and validation resolution ``[H, W]``."""
    val_fraction: float = 0.15
    """Fraction of the training frames (whole scenes) held out for validation."""
    split_seed: int = 0
    """Seeds the choice of validation scenes/pairs; fixed across trials so all see one split."""
    augment: bool = True
    """Horizontal flips and mild colour jitter on training images."""
    diw_root: str | None = None
    """Folder the DIW CSV image paths are relative to."""
    diw_train_csv: str | None = None
    """``DIW_train_val.csv``: stage-2 training pairs (a seeded part becomes validation)."""
    diw_test_csv: str | None = None
    """``DIW_test.csv``: held-out pairs, used only for test evaluation."""
    diw_val_fraction: float = 0.1
    """Fraction of ``DIW_train_val.csv`` held out for stage-2 validation."""
    batch_size: int = 8
    """Images per training batch."""
    num_workers: int = 0
    """DataLoader worker processes (0 loads in the training process)."""

    def __post_init__(self) -> None:
        if len(self.size) != 2 or any(not isinstance(s, int) or s < 8 for s in self.size):
            raise ConfigError(f"data.size: expected [H, W] with integers >= 8, found {self.size!r}")
        _check_range("data.val_fraction", self.val_fraction, 0.0, 0.9)
        _check_range("data.diw_val_fraction", self.diw_val_fraction, 0.0, 0.9)
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size: expected >= 1, found {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers: expected >= 0, found {self.num_workers}")


@dataclass
class OptimConfig:
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    """Optimizer."""
    lr: float = 1.0e-3
    """Peak learning rate."""
    weight_decay: float = 1.0e-4
    """Decoupled weight decay (AdamW) or L2 penalty (Adam, SGD)."""
    momentum: float = 0.9
    """SGD momentum (ignored by Adam/AdamW)."""
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    """Learning-rate schedule over all optimizer steps of the run."""
    warmup_fraction: float = 0.1
    """Fraction of the steps spent warming up linearly from ``lr / 25``."""
    grad_clip: float | None = 1.0
    """Clip the gradient norm to this value; None disables clipping."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr: expected > 0, found {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay: expected >= 0, found {self.weight_decay}")
        _check_range("optim.warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"optim.grad_clip: expected > 0 or null, found {self.grad_clip}")


@dataclass
class TrainConfig:
    stage: str = FIRST_STAGE
    """A stage of ``depthcore.stages.STAGES`` (``nyu``: depth; ``diw``: fine-tune from ``init_checkpoint``)."""
    select_metric: str | None = None
    """Validation metric that picks the best epoch, in its own direction; None: the stage's default."""
    epochs: int = 10
    """Number of passes over the training set."""
    loss: Literal["mse", "l1", "silog", "mse_norm"] = "mse"
    """Stage-1 depth loss (stage ``diw`` always uses the ranking loss)."""
    init_checkpoint: str | None = None
    """Stage ``diw``: the stage-1 checkpoint whose model and weights are fine-tuned."""
    seed: int = 0
    """Seeds weights, shuffling and augmentation."""
    threads: int | None = None
    """``torch.set_num_threads`` for this run (None: leave torch's default)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` picks CUDA when available."""
    amp: bool = True
    """Mixed precision (float16 autocast + gradient scaling) on CUDA; ignored on CPU."""
    channels_last: bool = False
    """Use the channels-last memory format (faster convolutions on recent GPUs)."""
    max_batches_per_epoch: int | None = None
    """Cap on training batches per epoch, for smoke tests; the schedule follows the cap."""
    out_dir: str = "runs/train"
    """Where checkpoints are written: ``best/`` (the best epoch's weights, no optimizer state) and
    ``checkpoints/epoch_NNNN/`` (the newest epoch only, with optimizer state, to resume)."""
    keep_last: bool = True
    """Keep the newest epoch's checkpoint in ``checkpoints/`` (needed to resume)."""
    verbose: bool = True
    """Print one progress line per epoch."""

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"train.stage: expected one of {', '.join(STAGES)}, found {self.stage!r}")
        if self.select_metric is not None and self.select_metric not in STAGES[self.stage].metrics:
            raise ConfigError(f"train.select_metric: expected one of {', '.join(STAGES[self.stage].metrics)} "
                              f"for stage {self.stage}, found {self.select_metric!r}")
        if self.epochs < 1:
            raise ConfigError(f"train.epochs: expected >= 1, found {self.epochs}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"train.threads: expected >= 1 or null, found {self.threads}")
        if self.max_batches_per_epoch is not None and self.max_batches_per_epoch < 1:
            raise ConfigError(
                f"train.max_batches_per_epoch: expected >= 1 or null, found {self.max_batches_per_epoch}"
            )


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        stage = STAGES[self.train.stage]
        if stage.task == DEPTH_TASK and not self.data.nyu_path:
            raise ConfigError(f"data.nyu_path: stage {stage.name!r} needs the NYU .mat or cache file, found null")
        if stage.finetunes and not self.train.init_checkpoint:
            raise ConfigError(f"train.init_checkpoint: stage {stage.name!r} needs a stage-1 checkpoint, found null")
        if stage.task == ORDINAL_TASK:
            for key in ("diw_root", "diw_train_csv"):
                if not getattr(self.data, key):
                    raise ConfigError(f"data.{key}: stage {stage.name!r} needs it, found null")

    @property
    def selection(self) -> tuple[str, str]:
        """``(metric, mode)`` that picks the best epoch: ``train.select_metric`` or the stage's default."""
        metric = self.train.select_metric or STAGES[self.train.stage].default_metric
        return metric, mode_of(metric)

    # -- conversion -----------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
        """Build and validate a config; errors are prefixed with ``source``."""
        try:
            return _build(cls, raw, prefix="")
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
        """Load YAML, apply ``key=value`` overrides (dotted keys), validate."""
        raw = load_yaml(path)
        resolve_paths(raw, Path(path).resolve().parent)
        for item in overrides or []:
            set_dotted(raw, *parse_override(item))
        return cls.from_dict(raw, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML- and ``torch.load(weights_only=True)``-safe)."""
        return dataclasses.asdict(self)

    def flat(self, sep: str = "/") -> dict[str, Any]:
        """``{"optim/lr": 0.001, "model/args/encoder": "resnet18", ...}``."""
        return flatten(self.to_dict(), sep=sep)

    def replace(self, **sections: dict[str, Any]) -> ExperimentConfig:
        """A copy with some keys changed, e.g. ``cfg.replace(train={"epochs": 2})``."""
        raw = self.to_dict()
        for section, values in sections.items():
            for key, value in values.items():
                set_dotted(raw, f"{section}.{key}", value)
        return ExperimentConfig.from_dict(raw)


# -- helpers -------------------------------------------------------------------------


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a syntax error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}:{where} invalid YAML: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}")
    return raw


# Keys holding file paths; relative ones in a file are relative to that file's folder.
PATH_KEYS = ("data.nyu_path", "data.split_file", "data.diw_root", "data.diw_train_csv",
             "data.diw_test_csv", "train.init_checkpoint")


def resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the relative paths among ``PATH_KEYS`` absolute against ``base``, in place."""
    for key in PATH_KEYS:
        section, name = key.split(".")
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(name), str) and not Path(node[name]).is_absolute():
            node[name] = str((base / node[name]).resolve())


def add_set_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """The repeatable ``--set KEY=VALUE`` option of the CLIs, collected in ``args.overrides``."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a value by dotted key, e.g. {example} (repeatable)")


def parse_override(item: str) -> tuple[str, Any]:
    """``"optim.lr=1.0e-4"`` -> ``("optim.lr", 0.0001)``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, _, text = item.partition("=")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key.strip(), _coerce_float_string(value)


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``key="a.b"`` (or ``"a/b"``), creating mappings."""
    parts = key.replace("/", ".").split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def flatten(raw: dict[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, sep=sep, prefix=name + sep))
        else:
            out[name] = value
    return out


def _coerce_float_string(value: Any) -> Any:
    # On the command line "1e-5" should mean the number, as a user expects.
    if isinstance(value, str) and _FLOAT_LIKE.match(value):
        return float(value)
    return value


def _check_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key}: expected a value in [{low}, {high}], found {value}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    section = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{section}: expected a mapping, found {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key; valid keys in {section}: {', '.join(sorted(fields))}"
        )
    values = {}
    for name in fields & set(raw):
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(typing.cast(type, hint), raw[name], prefix=f"{prefix}{name}.")
        else:
            values[name] = _check_type(f"{prefix}{name}", raw[name], hint)
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(str(err)) from None


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Return ``value`` (ints widened to float where a float is expected) or raise."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _check_type(key, value, option)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {', '.join(map(str, args))}, found {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, found {type(value).__name__} {value!r}")
        return [_check_type(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, found {type(value).__name__} {value!r}")
        return value
    if hint is Any:
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint_text = ""
            if isinstance(value, str) and _FLOAT_LIKE.match(value):
                hint_text = f" (PyYAML reads {value} as a string: write it with a dot, e.g. 1.0e-5)"
            raise ConfigError(f"{key}: expected a number, found {type(value).__name__} {value!r}{hint_text}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, found {type(value).__name__} {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, found {type(value).__name__} {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, found {type(value).__name__} {value!r}")
        return value
    return value
