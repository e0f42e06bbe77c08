"""Datasets: NYU Depth V2 (labeled ``.mat`` or our cache), Depth in the Wild, synthetic data.

Layouts and pitfalls of the real files are documented in :mod:`depthcore.data.nyu_files`
and :mod:`depthcore.data.diw`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from depthcore.data.cache import prepare_nyu_cache
from depthcore.data.diw import DepthInTheWild
from depthcore.data.nyu_v2 import NyuDepthV2

if TYPE_CHECKING:
    from depthcore.data.synthetic import generate_synthetic

__all__ = ["DepthInTheWild", "NyuDepthV2", "generate_synthetic", "prepare_nyu_cache"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `python -m depthcore.data.synthetic` (which imports this
    # package first) does not find its own module already in sys.modules and warn.
    if name == "generate_synthetic":
        from depthcore.data.synthetic import generate_synthetic

        return generate_synthetic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
