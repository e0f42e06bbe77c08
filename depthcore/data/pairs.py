"""How the synthetic DIW-style point pairs are drawn, so that no trivial rule orders them.

In a room seen from standing height the upper of two points is usually the farther one (walls
and ceiling above, the floor close by below), so pairs drawn at random let the rule "the upper
point is farther" score far above chance without looking at the image. The pairs here are
drawn against that rule:

- pair ``i`` is assigned an orientation: for half of the pairs (``(i // 2) % 2 == 0``) the upper
  point is the farther one, for the other half the lower point is, so the vertical-position rule
  scores 50 % on a whole set (on a random subset, 50 % up to sampling noise);
- and a vertical offset class: three pairs in four (``(i // 4) % 4 != 3``) lie at least
  ``FAR_OFFSET`` (10 %) of the image height apart vertically, the fourth between one pixel and
  that; no pair shares a row, so the rule never has to guess;
- both points then come from ``CANDIDATES`` random draws at that offset, keeping the first pair
  of that orientation whose depths differ by a factor of at least ``MIN_DEPTH_RATIO``.

Which point is written as A alternates with ``i % 2`` (A farther, then A closer), independent
of the orientation, so the CSV's ``>`` / ``<`` is balanced too.
"""

from __future__ import annotations

import numpy as np

MIN_DEPTH_RATIO = 1.15  # pairs must be clearly ordered
FAR_OFFSET = 0.10  # of the image height
CANDIDATES = 2048


def upper_is_farther(index: int) -> bool:
    """The orientation assigned to pair ``index``."""
    return (index // 2) % 2 == 0


def far_apart(index: int) -> bool:
    """Whether pair ``index`` is drawn at least ``FAR_OFFSET`` of the height apart vertically."""
    return (index // 4) % 4 != 3


def _offsets(height: int, far: bool, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` signed vertical offsets of the offset class ``far``."""
    split = max(1, int(np.ceil(FAR_OFFSET * height)))
    low, high = (split, height - 1) if far else (1, split - 1)
    high = max(high, low)
    return rng.integers(low, high + 1, n) * rng.choice((-1, 1), n)


def draw_pair(depth: np.ndarray, index: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """0-based (y_A, x_A, y_B, x_B) for pair ``index`` on an image with ``depth`` (H, W).

    A is the farther point when ``index`` is even. The pair has the orientation and offset class
    ``index`` is assigned (see the module docstring). When no candidate of that offset class is
    clearly ordered, a clearly ordered one of the other offset class is taken, and failing that the
    most clearly ordered candidate of the right orientation.
    """
    h, w = depth.shape
    want_upper = upper_is_farther(index)
    best: tuple[float, tuple[int, int, int, int]] | None = None
    for far in (far_apart(index), not far_apart(index)):
        dy = _offsets(h, far, CANDIDATES, rng)
        y1 = rng.integers(0, h, CANDIDATES)
        y2 = y1 + dy
        inside = (y2 >= 0) & (y2 < h) & (dy != 0)
        y1, y2 = y1[inside], y2[inside]
        x1, x2 = rng.integers(0, w, (2, y1.size))
        d1, d2 = depth[y1, x1], depth[y2, x2]
        upper_first = y1 < y2
        upper_depth, lower_depth = np.where(upper_first, d1, d2), np.where(upper_first, d2, d1)
        oriented = (upper_depth > lower_depth) == want_upper
        ratio = np.maximum(d1, d2) / np.maximum(np.minimum(d1, d2), 1e-6)
        clear = np.flatnonzero(oriented & (ratio > MIN_DEPTH_RATIO))
        if clear.size:
            k = int(clear[0])
        elif oriented.any():
            k = int(np.flatnonzero(oriented)[ratio[oriented].argmax()])
            if best is None or ratio[k] > best[0]:
                best = (float(ratio[k]), (int(y1[k]), int(x1[k]), int(y2[k]), int(x2[k])))
            continue
        else:
            continue
        return _farther_first((int(y1[k]), int(x1[k]), int(y2[k]), int(x2[k])), depth, index % 2 == 0)
    if best is None:  # a flat image: no pair of either orientation
        return (0, 0, h - 1, w - 1) if index % 2 == 0 else (h - 1, w - 1, 0, 0)
    return _farther_first(best[1], depth, index % 2 == 0)


def _farther_first(pair: tuple[int, int, int, int], depth: np.ndarray, farther_first: bool) -> tuple[int, int, int, int]:
    y_a, x_a, y_b, x_b = pair
    if (depth[y_a, x_a] > depth[y_b, x_b]) != farther_first:
        return y_b, x_b, y_a, x_a
    return pair


def vertical_rule_correct(y_a: int, y_b: int, a_farther: bool) -> float:
    """The rule "the upper point is farther" on one pair: 1 right, 0 wrong, 0.5 for a pair on one row
    (the rule cannot tell, so it scores what a coin flip would)."""
    if y_a == y_b:
        return 0.5
    return float((y_a < y_b) == a_farther)
