"""Resizing and augmentation shared by the NYU loader and the cache writer.

The cache stores exactly what these functions produce, so the ``.mat`` and the cache
give the same samples up to uint8 / float16 rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def as_size(size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """Normalise a size argument to ``(H, W)`` (an int means a square)."""
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive (H, W), found {tuple(size)}")
    return h, w


def resize_image(image: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Bilinear, antialiased resize of float images ``(B, 3, H, W)`` in [0, 1]."""
    if size is None or tuple(image.shape[-2:]) == size:
        return image
    out = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)


def resize_filled_depth(
    depth: torch.Tensor, valid: torch.Tensor, size: tuple[int, int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize in-painted depth ``(B, 1, H, W)`` bilinearly and its mask by nearest.

    No antialiasing: averaging a wide footprint across object edges would invent depths
    that exist nowhere in the scene; plain bilinear only blends direct neighbours.
    Invalid pixels are zeroed first so NaNs cannot spread; a pixel stays valid only if its
    nearest source pixel was valid and the blended value is still > 1e-3.
    """
    depth = torch.where(valid, depth, torch.zeros_like(depth))
    if size is None or tuple(depth.shape[-2:]) == size:
        return depth, valid
    out = F.interpolate(depth, size=size, mode="bilinear", align_corners=False)
    mask = resize_mask(valid, size) & (out > 1e-3)
    return out, mask


def resize_raw_depth(depth: torch.Tensor, size: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize raw Kinect depth ``(B, 1, H, W)`` (0 = missing) by nearest; mask = depth > 0.

    Nearest keeps holes as holes: interpolation would blend 0 with valid values.
    """
    depth = torch.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)
    if size is not None and tuple(depth.shape[-2:]) != size:
        depth = F.interpolate(depth, size=size, mode="nearest-exact")
    return depth, depth > 0


def resize_mask(mask: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Nearest resize of a bool mask ``(B, 1, H, W)``."""
    if size is None or tuple(mask.shape[-2:]) == size:
        return mask
    return F.interpolate(mask.to(torch.uint8), size=size, mode="nearest-exact").bool()


def filled_valid(depth: torch.Tensor) -> torch.Tensor:
    """Valid pixels of in-painted depth: finite and > 1e-3 m."""
    return torch.isfinite(depth) & (depth > 1e-3)


def color_jitter(image: torch.Tensor, strength: float = 0.2) -> torch.Tensor:
    """Mild brightness / contrast / saturation jitter of one ``(3, H, W)`` image in [0, 1].

    Uses the global torch RNG, which DataLoader seeds differently in each worker.
    """
    factors = 1.0 + strength * (2.0 * torch.rand(3) - 1.0)
    brightness, contrast, saturation = (float(f) for f in factors)
    out = image * brightness
    mean = out.mean()
    out = (out - mean) * contrast + mean
    gray = (0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2]).unsqueeze(0)  # (1, H, W)
    out = (out - gray) * saturation + gray
    return out.clamp_(0.0, 1.0)
