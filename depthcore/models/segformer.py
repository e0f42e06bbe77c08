"""SegFormer (Xie et al. 2021) from segmentation_models_pytorch, with one depth channel.

Mix Transformer encoder (``mit_b*``: overlapping patch embeddings, efficient self-attention,
four stages at strides 4, 8, 16, 32) -> all-MLP decoder (each stage projected to
``decoder_channels``, upsampled to stride 4, concatenated and fused) -> 1 channel, upsampled
4x -> softplus depth (``DepthModel``). smp needs sides that are multiples of 32, so inputs are
reflect-padded to one and cropped back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from depthcore._registry import MODELS
from depthcore.models.base import DepthModel
from depthcore.models.families import Family, register_family
from depthcore.models.weights import cached_smp_encoder_weights

ENCODERS = ("mit_b0", "mit_b1", "mit_b2")
"""Mix Transformer sizes this project builds and tests (3.3 M, 13.2 M, 24.2 M encoder parameters)."""

DEFAULT_DECODER_CHANNELS = 256  # smp's default, and the paper's MLP width for mit_b0 and mit_b1
STRIDE = 32  # the last stage's output stride


@MODELS.register("segformer")
def build_segformer(
    *, encoder: str = "mit_b0", decoder_channels: int = DEFAULT_DECODER_CHANNELS, pretrained: bool = False
) -> DepthModel:
    """Build SegFormer for depth: image (B, 3, H, W) in [0, 1] -> depth (B, 1, H, W) > 0.

    Args:
        encoder: one of ``ENCODERS``.
        decoder_channels: width of the all-MLP decoder (its parameters grow about as its square).
        pretrained: load the encoder's ImageNet weights from the local Hugging Face cache;
            raises ``FileNotFoundError`` at once if they are not there.
    """
    # Imported here, not at module level: registering the family (and checking a sweep's spec)
    # must not cost the seconds that importing smp, timm and torchvision takes.
    import segmentation_models_pytorch as smp
    from safetensors.torch import load_file

    check_segformer_args({"encoder": encoder, "decoder_channels": decoder_channels})
    weights_path = cached_smp_encoder_weights(encoder, "SegFormer") if pretrained else None
    net = smp.Segformer(
        encoder_name=encoder,
        encoder_weights=None,  # smp's default "imagenet" would download
        decoder_segmentation_channels=decoder_channels,
        classes=1,
    )
    if weights_path is not None:
        # The encoder's own load_state_dict drops the ImageNet classifier's keys.
        net.encoder.load_state_dict(load_file(weights_path, device="cpu"))
    return DepthModel(net, pad_multiple=STRIDE)


def check_segformer_args(args: Mapping[str, Any]) -> None:
    """The value checks of ``build_segformer`` (ValueError listing the valid choices), without building."""
    if args["encoder"] not in ENCODERS:
        raise ValueError(f"unknown SegFormer encoder {args['encoder']!r}; valid encoders: {', '.join(ENCODERS)}")
    channels = args["decoder_channels"]
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"SegFormer decoder_channels must be a positive integer, found {channels!r}")


register_family(Family("segformer", "SegFormer", check_segformer_args, lambda args: str(args["encoder"])))
