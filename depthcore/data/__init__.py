"""Datasets: NYU Depth V2 (labeled ``.mat`` or our cache), Depth in the Wild, synthetic data.

Layouts and pitfalls of the real files are documented in :mod:`depthcore.data.nyu_files`
and :mod:`depthcore.data.diw`.
"""

from __future__ import annotations

from depthcore.data.cache import prepare_nyu_cache
from depthcore.data.diw import DepthInTheWild
from depthcore.data.nyu_v2 import NyuDepthV2
from depthcore.data.synthetic import generate_synthetic

__all__ = ["DepthInTheWild", "NyuDepthV2", "generate_synthetic", "prepare_nyu_cache"]
