"""Depth models: image (B, 3, H, W) in [0, 1] -> depth (B, 1, H, W) > 0.

Families (one file each, registered in ``depthcore._registry.MODELS``): ``unetpp`` (U-Net++,
smp) and ``lraspp`` (LR-ASPP on MobileNetV3, torchvision). ``presets`` adds named variants of
both at matched parameter counts. Build any of them with ``create_model(name, **kwargs)``.
"""

from __future__ import annotations

# Imported for their registrations, families before the presets that refer to them.
from depthcore.models import lraspp, presets, unetpp  # noqa: F401
from depthcore.models.base import DepthModel, count_parameters
from depthcore.models.factory import check_model_args, create_model, list_models, model_from_spec, model_info
from depthcore.models.presets import PRESETS, Preset, matched_pairs

__all__ = [
    "PRESETS",
    "DepthModel",
    "Preset",
    "check_model_args",
    "count_parameters",
    "create_model",
    "list_models",
    "matched_pairs",
    "model_from_spec",
    "model_info",
]
