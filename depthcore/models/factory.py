"""Build models by registry name and describe them, so configs and checkpoints store names."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from depthcore._registry import MODELS
from depthcore.models.base import count_parameters


def list_models() -> list[str]:
    """Every registered model name, families and presets, sorted."""
    return MODELS.names()


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with ``kwargs``.

    The model maps images (B, 3, H, W) in [0, 1] to depth (B, 1, H, W) > 0 and carries
    ``model.depthcore_spec = {"name": name, "args": kwargs}`` so a checkpoint can rebuild it.
    Raises KeyError for an unknown name and ValueError for an unknown argument or value,
    each listing the valid choices.
    """
    builder = MODELS.get(name)
    valid = [p.name for p in inspect.signature(builder).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"model {name!r} got unknown argument(s) {', '.join(unknown)}; valid arguments: {', '.join(valid)}"
        )
    model = builder(**kwargs)
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
    model.depthcore_spec = {"name": spec["name"], "args": dict(spec["args"])}
    return model


def model_info(model: nn.Module) -> dict[str, Any]:
    """Name, arguments and parameter counts of a model built by ``create_model`` (for logging)."""
    spec = getattr(model, "depthcore_spec", {"name": type(model).__name__, "args": {}})
    return {"name": spec["name"], "args": dict(spec["args"]), **count_parameters(model)}
