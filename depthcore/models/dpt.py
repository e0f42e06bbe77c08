"""DPT, the Dense Prediction Transformer (Ranftl et al. 2021), from segmentation_models_pytorch, one depth channel.

ViT encoder from timm (patch 16: one token per 16 x 16 pixels at every block) -> tokens of four
evenly spaced blocks reassembled into image-like maps at strides 4, 8, 16 and 32
(``decoder_channels``), the class token concatenated in ("cat" readout) -> fusion blocks
(``fusion_channels``) from coarse to fine -> 1 channel at the input size -> softplus depth
(``DepthModel``). It is the architecture of DPT/MiDaS and Depth Anything.

The ViT is built with ``dynamic_img_size=True`` (position embeddings interpolated to the token
grid) so it is not tied to 224 x 224; the reassembly then still needs sides that are multiples
of 32, so inputs are reflect-padded to one and cropped back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from depthcore._registry import MODELS
from depthcore.models.base import DepthModel
from depthcore.models.families import Family, register_family
from depthcore.models.weights import cached_hub_file

ENCODERS = ("vit_tiny_patch16_224", "vit_small_patch16_224")
"""timm ViTs this project builds and tests (5.7 M and 21.7 M encoder parameters)."""

DEFAULT_DECODER_CHANNELS = (256, 512, 1024, 1024)  # smp's default (the paper's, for ViT-Base)
DEFAULT_FUSION_CHANNELS = 256
STRIDE = 32  # the coarsest reassembled map


@MODELS.register("dpt")
def build_dpt(
    *,
    encoder: str = "vit_tiny_patch16_224",
    decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
    fusion_channels: int = DEFAULT_FUSION_CHANNELS,
    pretrained: bool = False,
) -> DepthModel:
    """Build DPT for depth: image (B, 3, H, W) in [0, 1] -> depth (B, 1, H, W) > 0.

    Args:
        encoder: one of ``ENCODERS`` (a timm model name).
        decoder_channels: four widths of the reassembled maps, finest (stride 4) first.
        fusion_channels: width of the fusion blocks and the head.
        pretrained: load the ViT's ImageNet weights (timm's default tag) from the local Hugging
            Face cache; raises ``FileNotFoundError`` at once if they are not there.
    """
    # Imported here, not at module level: registering the family (and checking a sweep's spec)
    # must not cost the seconds that importing smp, timm and torchvision takes.
    import segmentation_models_pytorch as smp
    import timm

    check_dpt_args({"encoder": encoder, "decoder_channels": decoder_channels, "fusion_channels": fusion_channels})
    cfg = timm.models.get_pretrained_cfg(encoder)
    if cfg is None or cfg.hf_hub_id is None:  # not for the names in ENCODERS
        raise ValueError(f"timm has no pretrained configuration with a Hugging Face repository for {encoder!r}")
    extra: dict[str, Any] = {}
    if pretrained:
        what = f"ImageNet weights for DPT encoder {encoder!r}"
        # timm loads from a local file when the pretrained config names one: no hub access at all.
        extra["pretrained_cfg_overlay"] = {"file": cached_hub_file(cfg.hf_hub_id, "model.safetensors", None, what)}
    net = smp.DPT(
        encoder_name=f"tu-{encoder}",
        encoder_weights="imagenet" if pretrained else None,
        decoder_intermediate_channels=tuple(decoder_channels),
        decoder_fusion_channels=fusion_channels,
        classes=1,
        dynamic_img_size=True,
        **extra,
    )
    # smp takes the ViT's intermediate tokens before its final norm, and never uses the classifier:
    # drop both, or ~0.2 M dead parameters would count towards the size and never get a gradient.
    vit = net.encoder.model
    vit.prune_intermediate_layers(len(vit.blocks), prune_norm=True, prune_head=True)
    # Normalise as the ViT was pretrained (timm's augreg ViTs: mean = std = 0.5), with or without
    # its weights, so a rebuilt model (pretrained forced off) behaves as the one it was saved from.
    mean, std = cfg.mean, cfg.std
    return DepthModel(net, pad_multiple=STRIDE, mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]))


def check_dpt_args(args: Mapping[str, Any]) -> None:
    """The value checks of ``build_dpt`` (ValueError listing the valid choices), without building."""
    if args["encoder"] not in ENCODERS:
        raise ValueError(f"unknown DPT encoder {args['encoder']!r}; valid encoders: {', '.join(ENCODERS)}")
    channels = args["decoder_channels"]
    if (
        isinstance(channels, (str, bytes))
        or not isinstance(channels, Sequence)
        or len(channels) != 4
        or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)
    ):
        raise ValueError(f"DPT decoder_channels must be 4 positive integers (strides 4 to 32), found {channels!r}")
    fusion = args["fusion_channels"]
    if isinstance(fusion, bool) or not isinstance(fusion, int) or fusion < 1:
        raise ValueError(f"DPT fusion_channels must be a positive integer, found {fusion!r}")


register_family(Family("dpt", "DPT", check_dpt_args, lambda args: str(args["encoder"])))
