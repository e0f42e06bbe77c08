"""What every benchmark shares: interleaved timing with medians, a Markdown table, and the verdict line.

Each script ends with exactly one JSON object on its last line of output,
``{"bench": ..., "ratio": ..., "target": ..., "pass": ...}``, which ``tests/test_benchmarks.py``
reads. Ratios are measured side by side in one process with the set-ups interleaved (A B A B ...)
and the median taken per set-up, because the development machines are shared: absolute times
drift with the load, a ratio of medians taken under the same load much less.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def interleaved(setups: Mapping[str, Callable[[], float | None]], repeats: int) -> dict[str, list[float]]:
    """Run every set-up once per round, ``repeats`` rounds, in order; returns each one's measurements.

    A set-up returns its own measurement (e.g. images/s), or None to be timed here (seconds).
    """
    out: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(repeats):
        for name, run in setups.items():
            start = time.perf_counter()
            value = run()
            out[name].append(time.perf_counter() - start if value is None else float(value))
    return out


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats with 3 significant digits."""
    def cell(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(bench: str, ratio: float, target: float, passed: bool, **extra: Any) -> dict[str, Any]:
    """Print the verdict as the last line of output and return it.

    ``ratio`` and ``target`` are the headline figures; a second target's figures go in ``extra``
    (``pass`` then holds only when both do).
    """
    line = {"bench": bench, "ratio": round(float(ratio), 4), "target": target, "pass": bool(passed),
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in extra.items()}}
    print(json.dumps(line), flush=True)
    return line
