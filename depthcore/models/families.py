"""What a model family tells the rest of depthsweep about itself, registered beside its builder.

A family file registers its builder in ``depthcore._registry.MODELS`` and a ``Family`` here:
a display label, the check of its arguments (so a sweep can reject a bad point without
building a network) and how to name its encoder for tags and reports. Everything that asks
"which family is this model, and what is its encoder?" goes through ``factory.describe_model``,
so a new family needs no edit outside its own file (plus a line in ``__init__`` and, for
matched sizes, ``presets``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ArgsCheck = Callable[[Mapping[str, Any]], None]
"""Raises ValueError (one line, listing the valid choices) for a bad value among a family's arguments."""


@dataclass(frozen=True)
class Family:
    """A model family: the registry name of its builder plus what tags and reports need."""

    name: str
    """Registry name of the builder, e.g. ``"unetpp"``; also the ``architecture`` tag."""
    label: str
    """Name for people, e.g. ``"U-Net++"`` (report tables and plots)."""
    check_args: ArgsCheck
    """Checks the builder's arguments, defaults and preset arguments already merged in."""
    encoder: Callable[[Mapping[str, Any]], str]
    """The ``encoder`` tag from the merged arguments, e.g. ``"mobilenet_v2"``."""


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add ``family``; a name registered twice is refused."""
    if family.name in _FAMILIES:
        raise ValueError(f"model family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The family registered as ``name`` (a builder name, not a preset); KeyError lists the valid ones."""
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; valid families: {', '.join(sorted(_FAMILIES))}") from None


def list_families() -> list[str]:
    """Every registered family name, sorted."""
    return sorted(_FAMILIES)
