"""Depth models: image (B, 3, H, W) in [0, 1] -> depth (B, 1, H, W) > 0.

Families (one file each, registered in ``depthcore._registry.MODELS`` and, with their label,
argument check and encoder name, in ``families``): ``unetpp`` (U-Net++, smp), ``lraspp``
(LR-ASPP on MobileNetV3, torchvision), ``segformer`` (SegFormer on Mix Transformers, smp) and
``dpt`` (DPT on timm ViTs, smp). ``presets`` adds named variants at matched parameter counts.
Build any of them with ``create_model(name, **kwargs)``; ``describe_model(name, args)`` says
which family and encoder a name stands for.
"""

from __future__ import annotations

# Imported for their registrations, families before the presets that refer to them.
from depthcore.models import dpt, lraspp, presets, segformer, unetpp  # noqa: F401
from depthcore.models.base import DepthModel, count_parameters
from depthcore.models.factory import (
    check_model_args,
    create_model,
    describe_model,
    list_models,
    model_family,
    model_from_spec,
    model_info,
    resolved_args,
)
from depthcore.models.families import Family, get_family, list_families
from depthcore.models.presets import PRESETS, Preset, matched_pairs

__all__ = [
    "PRESETS",
    "DepthModel",
    "Family",
    "Preset",
    "check_model_args",
    "count_parameters",
    "create_model",
    "describe_model",
    "get_family",
    "list_families",
    "list_models",
    "matched_pairs",
    "model_family",
    "model_from_spec",
    "model_info",
    "resolved_args",
]
