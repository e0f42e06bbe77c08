"""Build models by registry name and describe them, so configs and checkpoints store names."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from depthcore._registry import MODELS
from depthcore.models.base import count_parameters
from depthcore.models.families import get_family
from depthcore.models.presets import PRESETS


def list_models() -> list[str]:
    """Every registered model name, families and presets, sorted."""
    return MODELS.names()


def check_model_args(name: str, **kwargs: Any) -> None:
    """Check a model name, its argument names and values, without building the network.

    Raises the errors ``create_model`` raises (it calls this first): KeyError for an unknown
    name, ValueError for an unknown argument or an invalid value, each listing the valid
    choices. Presets are checked with their own arguments merged under ``kwargs``. Cheap
    enough to run for every point of a search space before any training starts.
    """
    builder = MODELS.get(name)
    valid = [p.name for p in inspect.signature(builder).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"model {name!r} got unknown argument(s) {', '.join(unknown)}; valid arguments: {', '.join(valid)}"
        )
    args = resolved_args(name, kwargs)
    if not isinstance(args.get("pretrained", False), bool):
        raise ValueError(f"pretrained must be true or false, found {args['pretrained']!r}")
    # The family's check is the one its builder runs, so a sweep can reject a bad point before
    # any network is built, with the builder's message.
    get_family(model_family(name)).check_args(args)


def model_family(name: str) -> str:
    """The family of a registered model: its own name for a family, the builder's for a preset.

    Raises KeyError listing the valid names for an unknown one.
    """
    MODELS.get(name)  # KeyError listing every registered name
    preset = PRESETS.get(name)
    return preset.builder if preset is not None else name


def resolved_args(name: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every argument the family builder receives for ``create_model(name, **args)``.

    The builder's defaults (stated only in its signature), under the preset's arguments,
    under ``args``.
    """
    preset = PRESETS.get(name)
    builder = MODELS.get(model_family(name))
    defaults = {
        p.name: p.default
        for p in inspect.signature(builder).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **(preset.args if preset is not None else {}), **(args or {})}


def describe_model(name: str, args: Mapping[str, Any] | None = None) -> dict[str, str]:
    """``{"architecture": family, "encoder": ...}`` of ``create_model(name, **args)``.

    E.g. ``describe_model("lraspp_7m")`` is ``{"architecture": "lraspp", "encoder":
    "mobilenet_v3_large_x1.5"}``: what tags and reports call a model, decided by its family's
    registration instead of by name (``get_family(architecture).label`` names it for people).
    """
    family = get_family(model_family(name))
    return {"architecture": family.name, "encoder": family.encoder(resolved_args(name, args))}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with ``kwargs``.

    The model maps images (B, 3, H, W) in [0, 1] to depth (B, 1, H, W) > 0 and carries
    ``model.depthcore_spec = {"name": name, "args": kwargs}`` so a checkpoint can rebuild it.
    Raises KeyError for an unknown name and ValueError for an unknown argument or value,
    each listing the valid choices.
    """
    check_model_args(name, **kwargs)
    model = MODELS.get(name)(**kwargs)
    model.depthcore_spec = {"name": name, "args": dict(kwargs)}
    return model


def model_from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from its ``depthcore_spec``, without pretrained weights.

    The checkpoint's state dict supplies the weights, so ``pretrained`` is forced off and the
    rebuild works offline.
    """
    if not isinstance(spec, Mapping) or set(spec) != {"name", "args"}:
        found = sorted(spec) if isinstance(spec, Mapping) else type(spec).__name__
        raise ValueError(f"model spec must be a mapping with keys 'args' and 'name', found {found}")
    model = create_model(spec["name"], **{**spec["args"], "pretrained": False})
    # Record the spec as given, so a rebuilt model describes itself like the original.
    model.depthcore_spec = {"name": spec["name"], "args": dict(spec["args"])}  # type: ignore[assignment]
    return model


def model_info(model: nn.Module) -> dict[str, Any]:
    """Name, arguments and parameter counts of a model built by ``create_model`` (for logging)."""
    spec = getattr(model, "depthcore_spec", {"name": type(model).__name__, "args": {}})
    return {"name": spec["name"], "args": dict(spec["args"]), **count_parameters(model)}
