"""Named presets: U-Net++ and LR-ASPP at matched parameter counts.

The seed compared a 48 M-parameter U-Net++ with a 3.2 M-parameter LR-ASPP, which measures size
as much as architecture. Each pair below differs in architecture but not in size (within 5 %).
A preset only sets arguments and calls its family's builder; arguments passed to
``create_model`` override the preset's (e.g. ``pretrained=True``).

====  ==============  ============================================  ==========
pair  name            arguments                                     parameters
====  ==============  ============================================  ==========
3m    ``unetpp_3m``   unetpp, mobilenet_v2, decoder (64,32,16,16,8)  3,250,281
3m    ``lraspp_3m``   lraspp, large, width_mult 1.0                  3,218,138
7m    ``unetpp_7m``   unetpp, mobilenet_v2, smp decoder              6,824,721
7m    ``lraspp_7m``   lraspp, large, width_mult 1.5                  6,998,578
16m   ``unetpp_16m``  unetpp, resnet18, smp decoder                 15,970,449
16m   ``lraspp_16m``  lraspp, large, width_mult 2.25                15,319,906
====  ==============  ============================================  ==========

Only the 3m pair can start from ImageNet weights on both sides (widened MobileNetV3s have none).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from depthcore._registry import MODELS
from depthcore.models import lraspp, unetpp  # noqa: F401  (registers the family builders first)


@dataclass(frozen=True)
class Preset:
    """A registered name that stands for a builder plus fixed arguments."""

    builder: str
    """Registry name of the family builder, e.g. ``"unetpp"``."""
    args: Mapping[str, Any] = field(default_factory=dict)
    """Arguments passed to the builder (overridable by the caller)."""
    pair: str = ""
    """Matched-pair label shared by the presets of similar size, e.g. ``"3m"``."""


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "unetpp_3m": Preset("unetpp", {"encoder": "mobilenet_v2", "decoder_channels": (64, 32, 16, 16, 8)}, "3m"),
        "lraspp_3m": Preset("lraspp", {"size": "large", "width_mult": 1.0}, "3m"),
        "unetpp_7m": Preset("unetpp", {"encoder": "mobilenet_v2"}, "7m"),
        "lraspp_7m": Preset("lraspp", {"size": "large", "width_mult": 1.5}, "7m"),
        "unetpp_16m": Preset("unetpp", {"encoder": "resnet18"}, "16m"),
        "lraspp_16m": Preset("lraspp", {"size": "large", "width_mult": 2.25}, "16m"),
    }
)


def matched_pairs() -> dict[str, list[str]]:
    """Preset names grouped by pair label, e.g. ``{"3m": ["unetpp_3m", "lraspp_3m"], ...}``."""
    pairs: dict[str, list[str]] = {}
    for name, preset in PRESETS.items():
        pairs.setdefault(preset.pair, []).append(name)
    return pairs


def _preset_builder(preset: Preset) -> Callable[..., nn.Module]:
    builder = MODELS.get(preset.builder)

    def build(**overrides: Any) -> nn.Module:
        return builder(**{**preset.args, **overrides})

    # Same keyword arguments as the family builder, so create_model can check them.
    build.__signature__ = inspect.signature(builder)  # type: ignore[attr-defined]
    build.__doc__ = f"{preset.builder} with {dict(preset.args)} (matched pair {preset.pair!r})."
    return build


for _name, _preset in PRESETS.items():
    MODELS.register(_name)(_preset_builder(_preset))
