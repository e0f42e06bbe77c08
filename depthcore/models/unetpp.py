"""U-Net++ (Zhou et al. 2018) from segmentation_models_pytorch, with one depth channel.

encoder (ImageNet CNN, 5 stages, stride 32) -> nested U-Net++ decoder -> 3x3 conv to 1 channel
-> softplus depth (``DepthModel``). Inputs of any size are reflect-padded to a multiple of 32,
which smp requires, and cropped back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from depthcore._registry import MODELS
from depthcore.models.base import DepthModel
from depthcore.models.families import Family, register_family
from depthcore.models.weights import cached_smp_encoder_weights

ENCODERS = ("resnet18", "resnet34", "resnext50_32x4d", "mobilenet_v2", "efficientnet-b0")
"""smp encoders this project builds and tests; any of them can load ImageNet weights."""

DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)  # smp's default
STRIDE = 32  # five halvings in the encoder

# smp's EfficientNet encoders keep the classifier's 1x1 "head" conv and its batch norm although
# forward never calls them: ~0.4 M dead parameters that would inflate the parameter count and
# never receive a gradient. We drop them (and their keys when loading ImageNet weights).
_UNUSED_ENCODER_PARTS = {"efficientnet-": ("_conv_head", "_bn1")}


@MODELS.register("unetpp")
def build_unetpp(
    *,
    encoder: str = "resnet34",
    decoder_channels: Sequence[int] | None = None,
    pretrained: bool = False,
) -> DepthModel:
    """Build U-Net++ for depth: image (B, 3, H, W) in [0, 1] -> depth (B, 1, H, W) > 0.

    Args:
        encoder: one of ``ENCODERS``.
        decoder_channels: five widths, deepest decoder stage first (smp's default if None).
        pretrained: load the encoder's ImageNet weights from the local Hugging Face cache;
            raises ``FileNotFoundError`` at once if they are not there.
    """
    # Imported here, not at module level: registering the family (and checking a sweep's spec)
    # must not cost the seconds that importing smp, timm and torchvision takes.
    import segmentation_models_pytorch as smp
    from safetensors.torch import load_file

    check_unetpp_args({"encoder": encoder, "decoder_channels": decoder_channels})
    channels = _check_decoder_channels(decoder_channels)
    weights_path = cached_smp_encoder_weights(encoder, "U-Net++") if pretrained else None

    net = smp.UnetPlusPlus(
        encoder_name=encoder,
        encoder_weights=None,  # smp's default "imagenet" would download
        decoder_channels=channels,
        classes=1,
    )
    unused = _drop_unused_encoder_parts(net.encoder, encoder)
    if weights_path is not None:
        state = load_file(weights_path, device="cpu")
        state = {k: v for k, v in state.items() if k.split(".")[0] not in unused}
        # The encoder's own load_state_dict drops its classifier keys, as smp does.
        net.encoder.load_state_dict(state)
    return DepthModel(net, pad_multiple=STRIDE)


def check_unetpp_args(args: Mapping[str, Any]) -> None:
    """The value checks of ``build_unetpp`` (ValueError listing the valid choices), without building."""
    if args["encoder"] not in ENCODERS:
        raise ValueError(f"unknown U-Net++ encoder {args['encoder']!r}; valid encoders: {', '.join(ENCODERS)}")
    _check_decoder_channels(args["decoder_channels"])


def _check_decoder_channels(decoder_channels: Sequence[int] | None) -> tuple[int, ...]:
    if decoder_channels is None:
        return DEFAULT_DECODER_CHANNELS
    channels = tuple(decoder_channels)
    if len(channels) != 5 or not all(isinstance(c, int) and c > 0 for c in channels):
        raise ValueError(
            f"decoder_channels must be 5 positive integers (one per encoder stage), found {decoder_channels!r}"
        )
    return channels


def _drop_unused_encoder_parts(encoder_module: nn.Module, encoder: str) -> tuple[str, ...]:
    for prefix, parts in _UNUSED_ENCODER_PARTS.items():
        if encoder.startswith(prefix):
            for part in parts:
                delattr(encoder_module, part)
            return parts
    return ()


register_family(Family("unetpp", "U-Net++", check_unetpp_args, lambda args: str(args["encoder"])))
