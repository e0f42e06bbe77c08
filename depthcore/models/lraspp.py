"""LR-ASPP (Howard et al. 2019, "Searching for MobileNetV3") from torchvision, with one depth channel.

MobileNetV3 backbone (last stage dilated: stride 16) -> "low" features at stride 8 and "high"
features at stride 16 -> LR-ASPP head (1x1 conv gated by global pooling, plus a 1x1 conv on the
low features) -> 1 channel, upsampled to the input -> softplus depth (``DepthModel``).
Any input size works.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from depthcore._registry import MODELS
from depthcore.models.base import DepthModel
from depthcore.models.families import Family, register_family

SIZES = ("large", "small")

if TYPE_CHECKING:
    from torchvision.models import MobileNet_V3_Large_Weights, MobileNet_V3_Small_Weights
    from torchvision.models.segmentation import LRASPP

# torchvision is imported inside the functions that build a network: registering the family
# (and checking a sweep's spec) must not cost the seconds that importing torchvision takes.


@MODELS.register("lraspp")
def build_lraspp(
    *, size: str = "large", width_mult: float = 1.0, pretrained: bool = False, bn_momentum: float = 0.1
) -> DepthModel:
    """Build LR-ASPP for depth: image (B, 3, H, W) in [0, 1] -> depth (B, 1, H, W) > 0.

    Args:
        size: MobileNetV3 variant, one of ``SIZES``.
        width_mult: scales every backbone width (parameters grow about as its square);
            used to match parameter counts with U-Net++.
        pretrained: load the backbone's ImageNet weights from the local torch hub cache;
            raises ``FileNotFoundError`` at once if they are not there.
        bn_momentum: momentum of every BatchNorm's running statistics. torchvision builds
            MobileNetV3 with 0.01 (TensorFlow's 0.99 decay), meant for ImageNet-length runs:
            after a few hundred steps the running statistics are still mostly their initial
            values and evaluation-mode predictions collapse towards a constant. PyTorch's
            default 0.1 tracks a short run; pass 0.01 to reproduce torchvision exactly.
    """
    from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    check_lraspp_args({"size": size, "width_mult": width_mult, "pretrained": pretrained, "bn_momentum": bn_momentum})
    weights = _cached_backbone_weights(size) if pretrained else None

    if size == "large" and width_mult == 1.0:
        # weights_backbone must be passed: the builder downloads ImageNet weights by default.
        net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=weights, num_classes=1)
    else:
        # torchvision has no builder for these; dilated=True as in its large builder.
        backbone = {"large": mobilenet_v3_large, "small": mobilenet_v3_small}[size](weights=weights, width_mult=width_mult, dilated=True)
        net = lraspp_on_mobilenet_v3(backbone.features, num_classes=1)
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = bn_momentum
    return DepthModel(net)


def check_lraspp_args(args: Mapping[str, Any]) -> None:
    """The value checks of ``build_lraspp`` (ValueError listing the valid choices), without building."""
    size, width_mult, bn_momentum = args["size"], args["width_mult"], args["bn_momentum"]
    if size not in SIZES:
        raise ValueError(f"unknown LR-ASPP size {size!r}; valid sizes: {', '.join(SIZES)}")
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0:
        raise ValueError(f"width_mult must be > 0, found {width_mult!r}")
    if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float)) or not 0.0 < bn_momentum <= 1.0:
        raise ValueError(f"bn_momentum must be in (0, 1], found {bn_momentum!r}")
    if args["pretrained"] and width_mult != 1.0:
        raise ValueError(f"ImageNet weights exist only for width_mult=1.0, found width_mult={width_mult}")


def lraspp_encoder(args: Mapping[str, Any]) -> str:
    """The backbone as a tag: ``mobilenet_v3_<size>``, with ``_x<width_mult>`` when widened."""
    width = float(args["width_mult"])
    return f"mobilenet_v3_{args['size']}" + ("" if width == 1.0 else f"_x{width:g}")


class LowHighFeatures(nn.Sequential):
    """Run MobileNetV3 blocks in order; return ``{"low": ..., "high": ...}`` for the LR-ASPP head.

    Blocks are numbered as in ``backbone.features``, so state-dict keys match torchvision's.
    """

    def __init__(self, blocks: nn.Sequential, low_index: int) -> None:
        super().__init__(*blocks)
        self.low_index = low_index

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features: dict[str, Tensor] = {}
        for index, block in enumerate(self):
            x = block(x)
            if index == self.low_index:
                features["low"] = x  # (B, C_low, H/8, W/8)
        features["high"] = x  # (B, C_high, H/16, W/16)
        return features


def lraspp_on_mobilenet_v3(features: nn.Sequential, num_classes: int) -> LRASPP:
    """Put torchvision's LR-ASPP head on MobileNetV3 ``features``, as the paper wires it.

    "low" is the first block at output stride 8 and "high" the last block. Strides are read
    from the blocks' ``_is_cn`` flag (set by torchvision when a block is configured with
    stride 2; a dilated block keeps the flag but no longer halves the resolution).
    """
    from torchvision.models.segmentation import LRASPP

    stride = 2  # the stem conv halves the resolution
    low_index = -1
    for index, block in enumerate(features):
        if index > 0 and getattr(block, "_is_cn", False):
            stride *= 2
            if stride == 8:
                low_index = index
    if low_index < 0:
        raise ValueError("MobileNetV3 features have no block at output stride 8")
    high_index = len(features) - 1
    low_channels = features[low_index].out_channels
    high_channels = features[high_index].out_channels
    backbone = LowHighFeatures(features, low_index)
    return LRASPP(backbone, low_channels, high_channels, num_classes)


def _cached_backbone_weights(size: str) -> MobileNet_V3_Large_Weights | MobileNet_V3_Small_Weights:
    """The backbone's ImageNet weights enum, after checking its file is in the torch hub cache.

    torchvision loads from ``torch.hub.get_dir()/checkpoints/<file name of the url>`` and
    downloads only when the file is missing, so a present file means no network access.
    """
    from torchvision.models import MobileNet_V3_Large_Weights, MobileNet_V3_Small_Weights

    # torchvision's lraspp_mobilenet_v3_large starts from IMAGENET1K_V1 backbone weights; small has only V1.
    weights = {"large": MobileNet_V3_Large_Weights.IMAGENET1K_V1, "small": MobileNet_V3_Small_Weights.IMAGENET1K_V1}[size]
    file_name = os.path.basename(urlparse(weights.url).path)
    path = os.path.join(torch.hub.get_dir(), "checkpoints", file_name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ImageNet weights for the LR-ASPP MobileNetV3-{size} backbone are not in the local torch hub "
            f"cache: expected {path}; on a machine with internet download {weights.url} to that path "
            f"(e.g. `curl -L -o {path} {weights.url}`), or use pretrained=False"
        )
    return weights


register_family(Family("lraspp", "LR-ASPP", check_lraspp_args, lraspp_encoder))
