"""CPU inference latency of a depth model, measured the same way wherever it is reported."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.inference_mode()
def cpu_latency_ms(
    model: nn.Module, size: tuple[int, int], *, batch: int = 1, warmup: int = 3, repeats: int = 10,
    threads: int | None = None,
) -> dict[str, float]:
    """Median and spread of the wall time of one forward pass on CPU, in milliseconds.

    The model runs in eval mode on a random image batch (batch, 3, H, W); ``warmup`` passes
    are discarded (allocator and oneDNN set-up). ``threads`` sets torch's intra-op threads for
    the measurement and restores the previous value afterwards (None: leave it as it is).
    Returns ``{"median_ms", "p90_ms", "min_ms", "threads", "batch"}``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, found {repeats}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    was_training = model.training
    try:
        model = model.eval().to("cpu")
        image = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(0))
        for _ in range(warmup):
            model(image)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(image)
            times.append(1000.0 * (time.perf_counter() - start))
    finally:
        model.train(was_training)
        torch.set_num_threads(previous)
    ordered = sorted(times)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "min_ms": ordered[0],
        "threads": float(threads if threads is not None else previous),
        "batch": float(batch),
    }
