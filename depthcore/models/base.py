"""What every depth model shares: input normalisation, padding, output resizing, positive depth.

A family file builds a bare network (image -> one-channel logits) and wraps it in
``DepthModel``, which fixes the contract the engine relies on::

    image (B, 3, H, W) float in [0, 1]  ->  depth (B, 1, H, W) float, > 0, same H and W
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MIN_DEPTH = 1e-3
"""Smallest depth a model can output (metres); also the lower clip of the standard metrics."""

INIT_DEPTH = 2.5
"""Depth (metres) an untrained model predicts for zero logits: a typical indoor distance."""

# softplus(x) = INIT_DEPTH at x = log(exp(INIT_DEPTH) - 1). Shifting the logits by it means a
# fresh network starts at a plausible depth instead of softplus(0) = 0.69 m, so the first
# epochs learn structure rather than the overall scale.
_LOGIT_OFFSET = math.log(math.expm1(INIT_DEPTH))


def positive_depth(logits: Tensor) -> Tensor:
    """Map unbounded logits to depth > 0: ``softplus(logits + offset) + MIN_DEPTH``, 2.5 m at 0."""
    # Why softplus: its slope is sigmoid(x) <= 1, so an MSE loss on metres in 0.5..10 gets
    # gradients of the same size at 1 m and at 10 m (exp would scale them by the depth and
    # can overflow early in training); above ~2 m it is nearly the identity, so the last
    # layer works in metres directly. Unlike ReLU it never has a dead zone, and unlike a
    # sigmoid times a maximum it does not squash far depths, which ranking losses need to
    # order. The MIN_DEPTH floor keeps log- and ratio-based losses and metrics finite.
    return F.softplus(logits + _LOGIT_OFFSET) + MIN_DEPTH


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Pad H and W of ``x`` (B, C, H, W) up to a multiple of ``multiple``.

    Returns the padded tensor and the pads ``(left, right, top, bottom)`` for ``crop_padding``.
    """
    height, width = x.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    if pad_h == 0 and pad_w == 0:
        return x, pads
    # Reflection continues the image's texture instead of adding a hard zero border that the
    # network would have to learn to ignore; it needs each pad smaller than the side it mirrors,
    # so tiny inputs fall back to repeating the edge pixels.
    mode = "reflect" if max(pads[:2]) < width and max(pads[2:]) < height else "replicate"
    return F.pad(x, pads, mode=mode), pads


def crop_padding(x: Tensor, pads: tuple[int, int, int, int]) -> Tensor:
    """Undo ``pad_to_multiple``: cut ``(left, right, top, bottom)`` pixels off ``x`` (B, C, H, W)."""
    left, right, top, bottom = pads
    height, width = x.shape[-2:]
    return x[..., top : height - bottom, left : width - right]


class DepthModel(nn.Module):
    """Wrap a network that maps a normalised image to one-channel logits into a depth model.

    Args:
        net: takes (B, 3, H', W') ImageNet-normalised images, returns (B, 1, h, w) logits,
            or a mapping with the logits under ``"out"`` (torchvision segmentation models).
        pad_multiple: reflect-pad the input to a multiple of this before ``net`` (e.g. 32 for
            encoders that halve the resolution five times) and crop the output back.
        mean, std: per-channel normalisation the encoder's pretrained weights expect
            (ImageNet's unless a family's weights were trained with another, e.g. timm's ViTs).
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        net: nn.Module,
        *,
        pad_multiple: int = 1,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if pad_multiple < 1:
            raise ValueError(f"pad_multiple must be >= 1, found {pad_multiple}")
        self.net = net
        self.pad_multiple = pad_multiple
        # Not persistent: constants, so checkpoints hold only learned weights.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        """Predict depth (B, 1, H, W) > 0 for an image batch (B, 3, H, W) in [0, 1]."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected an image batch of shape (B, 3, H, W), found {tuple(image.shape)}")
        height, width = image.shape[-2:]
        x = (image - self.mean) / self.std  # (B, 3, H, W)
        x, pads = pad_to_multiple(x, self.pad_multiple)  # (B, 3, H', W')
        logits = self.net(x)
        if isinstance(logits, Mapping):
            logits = logits["out"]
        logits = crop_padding(logits, pads)  # (B, 1, h, w)
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return positive_depth(logits)  # (B, 1, H, W)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Count parameters: ``{"trainable": n, "total": n}`` (shared tensors counted once)."""
    params = list(model.parameters())
    return {
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "total": sum(p.numel() for p in params),
    }
