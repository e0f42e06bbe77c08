"""Named presets: every family at matched parameter counts.

The seed compared a 48 M-parameter U-Net++ with a 3.2 M-parameter LR-ASPP, which measures size
as much as architecture. The presets of one pair differ in architecture but not in size (the
largest at most 5 % above the smallest). A preset only sets arguments and calls its family's
builder; arguments passed to ``create_model`` override the preset's (e.g. ``pretrained=True``).

====  =================  =====================================================  ==========
pair  name               arguments                                              parameters
====  =================  =====================================================  ==========
3m    ``unetpp_3m``      unetpp, mobilenet_v2, decoder (64,32,16,16,8)           3,250,281
3m    ``lraspp_3m``      lraspp, large, width_mult 1.0                           3,218,138
3m    ``segformer_3m``   segformer, mit_b0, decoder 32                           3,340,097
7m    ``unetpp_7m``      unetpp, mobilenet_v2, smp decoder                       6,824,721
7m    ``lraspp_7m``      lraspp, large, width_mult 1.5                           6,998,578
7m    ``dpt_7m``         dpt, vit_tiny_patch16_224, decoder (32,64,128,256), 32   6,835,553
16m   ``unetpp_16m``     unetpp, resnet18, smp decoder                          15,970,449
16m   ``lraspp_16m``     lraspp, large, width_mult 2.25                         15,319,906
16m   ``segformer_16m``  segformer, mit_b1, decoder 640                         15,449,665
====  =================  =====================================================  ==========

Gaps, measured: SegFormer has no 7m preset (mit_b0 makes 3.71 M with the paper's decoder
width 256 and would need a 864-wide decoder, twice its encoder, for 6.75 M; mit_b1 starts at
13.17 M) and DPT none at 3m (its ViT-Tiny encoder alone has 5.52 M parameters, 70 % above the
3m pair; the smallest decoder makes 5.90 M) nor a natural one at 16m (ViT-Small starts at
22.95 M, 50 % above; ViT-Tiny reaches 15.94 M only with a decoder twice its encoder). Only the
3m pair can start from ImageNet weights on every side (widened MobileNetV3s have none).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from depthcore._registry import MODELS
from depthcore.models import dpt, lraspp, segformer, unetpp  # noqa: F401  (registers the family builders first)


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
        "segformer_3m": Preset("segformer", {"encoder": "mit_b0", "decoder_channels": 32}, "3m"),
        "unetpp_7m": Preset("unetpp", {"encoder": "mobilenet_v2"}, "7m"),
        "lraspp_7m": Preset("lraspp", {"size": "large", "width_mult": 1.5}, "7m"),
        "dpt_7m": Preset(
            "dpt",
            {"encoder": "vit_tiny_patch16_224", "decoder_channels": (32, 64, 128, 256), "fusion_channels": 32},
            "7m",
        ),
        "unetpp_16m": Preset("unetpp", {"encoder": "resnet18"}, "16m"),
        "lraspp_16m": Preset("lraspp", {"size": "large", "width_mult": 2.25}, "16m"),
        "segformer_16m": Preset("segformer", {"encoder": "mit_b1", "decoder_channels": 640}, "16m"),
    }
)


def matched_pairs() -> dict[str, list[str]]:
    """Preset names grouped by pair label, e.g. ``{"3m": ["unetpp_3m", "lraspp_3m", "segformer_3m"], ...}``."""
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
