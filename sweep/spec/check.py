"""The checks behind ``sweep.spec.load_spec``: typed fields, Optuna distributions, config keys.

Every failure is a :class:`SpecError` with a one-line message
``<file>: <key path>: <what was expected>, found <what was found>``, where the key path
uses ``.`` between spec levels and ``/`` inside depthcore config keys
(``space.optim/lr.low``, ``stages.nyu.num_samples``).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
import typing
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from depthcore._registry import MODELS
from depthcore.config import ConfigError, ExperimentConfig, ModelConfig, set_dotted
from depthcore.models import check_model_args, list_models


class SpecError(ValueError):
    """A mistake in a sweep spec: the message is one line naming the file and the key."""


_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
_YAML_EXPONENT = re.compile(r"^[+-]?\d+[eE][+-]?\d+$")  # what PyYAML 1.1 leaves as a string
_MAX_MODEL_POINTS = 512  # cap on argument combinations checked per model (each check is microseconds)

DATA_PATHS = {
    "nyu_path": "file",
    "split_file": "file",
    "diw_root": "folder",
    "diw_train_csv": "file",
    "diw_test_csv": "file",
}
"""Real-data keys of the spec's ``data`` section (also ``data/*`` config keys): file or folder."""

# Keys the sweep fills in itself; a spec that sets them is mistaken about who owns them.
RESERVED_KEYS = {
    "train/stage": "it is set by the stage name under stages",
    "train/init_checkpoint": "the sweep sets it to a stage-1 checkpoint",
    "train/out_dir": "the sweep sets it per trial under study.output_dir",
    **{f"data/{name}": "set it in the data section" for name in DATA_PATHS},
}

DIST_FIELDS = {
    "float": ("low", "high", "log", "step"),
    "int": ("low", "high", "step", "log"),
    "categorical": ("choices",),
}
DIST_EXAMPLE = "a distribution such as {type: float, low: 1.0e-5, high: 1.0e-2, log: true}"


def describe(value: Any) -> str:
    """``found`` text for a value: its YAML type and value, plus a hint for ``1e-5``-style strings."""
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    text = f"{_TYPE_NAMES.get(type(value), type(value).__name__)} {text}"
    if isinstance(value, str) and _YAML_EXPONENT.match(value):
        mantissa, sep, exponent = value.replace("E", "e").partition("e")
        text += f" (PyYAML reads {value} as a string: write {mantissa}.0{sep}{exponent})"
    return text


def join(key: str, sub: Any) -> str:
    """Spec key path of ``sub`` inside ``key``: ``join("space", "optim/lr") == "space.optim/lr"``."""
    return f"{key}.{sub}" if key else str(sub)


class Checker:
    """Reads typed values out of a parsed spec, failing with the spec file's name."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, expected: str, found: str) -> NoReturn:
        self.fail_with(key, f"expected {expected}, found {found}")

    def fail_with(self, key: str, message: str) -> NoReturn:
        text = f"{self.file}: {key}: {message}" if key else f"{self.file}: {message}"
        raise SpecError(" ".join(text.split()))  # one line, whatever the parts held

    def mapping(self, key: str, value: Any, *, allow_null: bool = True) -> dict[Any, Any]:
        if value is None and allow_null:
            return {}
        if not isinstance(value, dict):
            self.fail(key, "a mapping", describe(value))
        return value

    def only_keys(self, key: str, raw: Mapping[Any, Any], valid: Sequence[str], what: str = "key") -> None:
        """Fail on the first key of ``raw`` not in ``valid``, listing the valid ones."""
        for name in raw:
            if name not in valid:
                where = f" of {key}" if key else ""
                self.fail(join(key, name), f"a {what}{where} ({', '.join(valid)})", f"an unknown {what}")

    def integer(self, key: str, value: Any, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, "an integer", describe(value))
        if minimum is not None and value < minimum:
            self.fail(key, f"an integer >= {minimum}", describe(value))
        return value

    def number(self, key: str, value: Any, *, above: float | None = None, at_least: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, "a number", describe(value))
        if above is not None and not value > above:
            self.fail(key, f"a number > {above}", describe(value))
        if at_least is not None and not value >= at_least:
            self.fail(key, f"a number >= {at_least}", describe(value))
        return float(value)

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.fail(key, "true or false", describe(value))
        return value

    def string(self, key: str, value: Any, choices: Sequence[str] | None = None) -> str:
        if not isinstance(value, str) or not value:
            self.fail(key, "a non-empty string" if choices is None else f"one of {', '.join(choices)}", describe(value))
        if choices is not None and value not in choices:
            self.fail(key, f"one of {', '.join(choices)}", describe(value))
        return value

    def optional(self, read: typing.Callable[..., Any], key: str, value: Any, **limits: Any) -> Any:
        """``read(key, value, **limits)``, or None for a null value."""
        return None if value is None else read(key, value, **limits)


# -- distributions --------------------------------------------------------------------------


def parse_distribution(chk: Checker, key: str, raw: Any) -> BaseDistribution:
    """``{type: float, low, high, log, step}``, ``{type: int, ...}`` or ``{type: categorical, choices}``."""
    if not isinstance(raw, dict):
        chk.fail(key, DIST_EXAMPLE, describe(raw))
    kind = raw.get("type")
    if kind not in DIST_FIELDS:
        chk.fail(join(key, "type"), "float, int or categorical", describe(kind) if "type" in raw else "nothing")
    chk.only_keys(key, raw, ("type", *DIST_FIELDS[kind]), what="field")
    if kind == "categorical":
        return _parse_categorical(chk, key, raw)
    read = chk.integer if kind == "int" else chk.number
    for name in ("low", "high"):
        if name not in raw:
            chk.fail(join(key, name), "an integer" if kind == "int" else "a number", "nothing")
    low, high = read(join(key, "low"), raw["low"]), read(join(key, "high"), raw["high"])
    log = chk.boolean(join(key, "log"), raw.get("log", False))
    step = raw.get("step")
    if step is not None:
        step = read(join(key, "step"), step)
        if step <= 0:
            chk.fail(join(key, "step"), "a step > 0", describe(step))
    if low >= high:
        chk.fail(key, "low < high", f"low {low}, high {high}")
    if log and low <= 0:
        chk.fail(join(key, "low"), "low > 0 with log: true", describe(raw["low"]))
    if log and step is not None:
        chk.fail(join(key, "step"), "no step with log: true (Optuna cannot combine them)", describe(raw["step"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a range that is not a multiple of step is reported below
        if kind == "int":
            dist: FloatDistribution | IntDistribution = IntDistribution(
                int(low), int(high), log=log, step=int(step or 1)
            )
        else:
            dist = FloatDistribution(low, high, log=log, step=step)
    if dist.high != high:
        chk.fail(join(key, "high"), f"low plus a multiple of step {step} (e.g. {dist.high})", describe(raw["high"]))
    return dist


def _parse_categorical(chk: Checker, key: str, raw: dict[str, Any]) -> CategoricalDistribution:
    choices = raw.get("choices")
    if not isinstance(choices, list) or not choices:
        chk.fail(join(key, "choices"), "a non-empty list", describe(choices) if "choices" in raw else "nothing")
    for index, choice in enumerate(choices):
        # Optuna stores choices as JSON scalars; a list (e.g. an image size) cannot be one.
        if choice is not None and not isinstance(choice, (bool, int, float, str)):
            chk.fail(f"{join(key, 'choices')}[{index}]", "null, a boolean, a number or a string", describe(choice))
        if choices.index(choice) != index:
            chk.fail(f"{join(key, 'choices')}[{index}]", "choices that differ from each other", f"{choice!r} twice")
    return CategoricalDistribution(choices)


def representatives(dist: BaseDistribution) -> list[tuple[Any, str]]:
    """Values that stand for a distribution in checks, each with its field: ends and every choice."""
    if isinstance(dist, CategoricalDistribution):
        return [(choice, "choices") for choice in dist.choices]
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    return [(dist.low, "low"), (dist.high, "high")]


def dist_to_dict(dist: BaseDistribution) -> dict[str, Any]:
    """The short form a distribution was written in (for printing and logging)."""
    if isinstance(dist, CategoricalDistribution):
        return {"type": "categorical", "choices": list(dist.choices)}
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    out: dict[str, Any] = {"type": kind, "low": dist.low, "high": dist.high, "log": dist.log}
    if dist.step is not None and not (kind == "int" and dist.step == 1):
        out["step"] = dist.step
    return out


# -- depthcore config keys ------------------------------------------------------------------


def config_sections() -> dict[str, type]:
    """``{"model": ModelConfig, "data": DataConfig, ...}``: the sections of ``ExperimentConfig``."""
    hints = typing.get_type_hints(ExperimentConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(ExperimentConfig)}


def check_config_key(chk: Checker, spec_key: str, key: Any) -> None:
    """Fail unless ``key`` (``optim/lr``, ``model/args/encoder``) names a field the sweep may set."""
    sections = config_sections()
    parts = key.split("/") if isinstance(key, str) else []
    if len(parts) < 2 or parts[0] not in sections:
        chk.fail(spec_key, f"a depthcore config key <section>/<name> with section {', '.join(sections)}", describe(key))
    fields = [f.name for f in dataclasses.fields(sections[parts[0]])]
    if parts[1] not in fields:
        valid = ", ".join(f"{parts[0]}/{name}" for name in fields)
        chk.fail(spec_key, f"a key of the depthcore {parts[0]} section ({valid})", describe(key))
    if parts[:2] == ["model", "args"]:
        if len(parts) != 3 or not parts[2]:
            chk.fail(spec_key, "a model argument as model/args/<argument>", describe(key))
    elif len(parts) > 2:
        chk.fail(spec_key, f"a key that ends at {parts[0]}/{parts[1]} (it holds a value)", describe(key))
    if key in RESERVED_KEYS:
        chk.fail(spec_key, f"a key the sweep does not set itself ({RESERVED_KEYS[key]})", describe(key))


def model_arguments(name: str) -> list[str]:
    """Keyword arguments of the builder registered as ``name``."""
    return [p.name for p in inspect.signature(MODELS.get(name)).parameters.values() if p.kind is p.KEYWORD_ONLY]


# -- representative points ------------------------------------------------------------------

Entry = tuple[Any, str]
"""A value and the spec key path it came from (``fixed.train/epochs``, ``space.optim/lr.low``)."""


def check_stage_points(
    chk: Checker,
    base: dict[str, Entry],
    fixed: dict[str, Entry],
    space: dict[str, tuple[BaseDistribution, str]],
    conditional: dict[str, dict[Any, dict[str, tuple[BaseDistribution, str]]]],
) -> None:
    """Check every model and config a stage can produce, one conditional branch at a time.

    ``base`` holds what the sweep sets (data paths, ``train/stage``); the other arguments are
    the stage's fixed values, distributions and conditional branches, each with its spec key.
    """
    contexts: list[tuple[str, dict[str, Entry], dict[str, tuple[BaseDistribution, str]]]] = [("", {}, {})]
    for parent, branches in conditional.items():
        for value, params in branches.items():
            contexts.append((f"{parent} = {value!r}", {parent: (value, f"conditional.{parent}.{value}")}, params))
    for note, pinned, extra in contexts:
        options: dict[str, list[Entry]] = {key: [entry] for key, entry in {**base, **fixed}.items()}
        origins = {key: origin for key, (_, origin) in {**base, **fixed, **space, **extra}.items()}
        for key, (dist, origin) in {**space, **extra}.items():
            options[key] = [(value, f"{origin}.{field}") for value, field in representatives(dist)]
        options.update({key: [entry] for key, entry in pinned.items()})
        check_points(chk, options, origins, note)


def check_points(chk: Checker, options: dict[str, list[Entry]], origins: dict[str, str], note: str) -> None:
    """Check every model and config the options can produce, before anything is built.

    ``options`` maps config keys (``optim/lr``) to the values to try: one for a fixed key,
    the representatives of a distribution otherwise. Models are checked over all argument
    combinations (they interact: ``pretrained`` needs ``width_mult`` 1.0); the config over
    one changed key at a time from the first values. ``origins`` gives the spec key of each
    config key, ``note`` says which conditional branch is being checked.
    """
    _check_models(chk, options, origins, note)
    first = {key: values[0] for key, values in options.items()}
    _check_config(chk, first, note)
    for key, values in options.items():
        for value in values[1:]:
            _check_config(chk, {**first, key: value}, note)


def _check_models(chk: Checker, options: dict[str, list[Entry]], origins: dict[str, str], note: str) -> None:
    names = options.get("model/name", [(ModelConfig.name, "model/name (the depthcore default)")])
    arg_keys = [key for key in options if key.startswith("model/args/")]
    for name, name_origin in names:
        if not isinstance(name, str):
            continue  # the config check reports the type
        if name not in list_models():
            chk.fail(name_origin, f"a model name ({', '.join(list_models())})", f"{describe(name)}{_with(note)}")
        valid = model_arguments(name)
        for key in arg_keys:
            arg = key.split("/")[2]
            if arg not in valid:
                chk.fail(
                    origins[key],
                    f"an argument of model {name!r} ({', '.join(valid)})",
                    f"{arg!r}{_with(note)}; to search it for some models only, put it under conditional: model/name",
                )
        points: list[dict[str, Any]] = [{}]
        for key in arg_keys:
            arg = key.split("/")[2]
            grown = []
            for args in points:
                for value, origin in options[key]:
                    candidate = {**args, arg: value}
                    try:
                        check_model_args(name, **candidate)
                    except (KeyError, ValueError) as err:
                        others = "".join(f", {a}={v!r}" for a, v in candidate.items() if a != arg)
                        chk.fail_with(origin, f"{err.args[0]} (model {name}{others})")
                    grown.append(candidate)
            points = grown[:_MAX_MODEL_POINTS]


def _check_config(chk: Checker, point: dict[str, Entry], note: str) -> None:
    raw: dict[str, Any] = {}
    for key, (value, _) in point.items():
        set_dotted(raw, key, copy.deepcopy(value))
    try:
        ExperimentConfig.from_dict(raw, source="config")
    except ConfigError as err:
        text = str(err).removeprefix("config: ")
        config_key, _, problem = text.partition(": ")
        key = re.sub(r"\[\d+\]$", "", config_key).replace(".", "/")
        origin = (
            point[key][1]
            if key in point
            else next((entry[1] for name, entry in point.items() if name.startswith(key + "/")), config_key)
        )
        chk.fail_with(origin, f"{problem}{_with(note)}")


def _with(note: str) -> str:
    return f" (with {note})" if note else ""
