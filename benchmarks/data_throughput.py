"""The data path against the model: loader samples/s over LR-ASPP's training consumption at 200x200.

    python benchmarks/data_throughput.py [--quick] [--frames 96] [--threads 1] [--repeats 3]

A synthetic NYU Depth V2 ``.mat`` (real file layout, 480x640 frames) and a DIW folder (JPEGs and
the CSV) are generated into a temporary folder, and the NYU cache at 200x200 is prepared from
the ``.mat`` as a sweep does. Then, interleaved and repeated:

- ``NYU cache``: ``depthcore.loaders.train_val_loaders`` as a trial builds them (augmentation
  on, ``data.num_workers`` as given, default 0: a 1-CPU trial loads in its own process),
- ``DIW``: the same for stage ``diw`` (decode, resize, point mapping),
- ``NYU .mat``: the raw ``.mat`` read and resized per sample (what the cache avoids), shown
  for comparison only,
- ``LR-ASPP training``: images/s of forward, loss, backward, step at 200x200, batch 8, with
  the same number of torch threads.

Targets (firm): both loaders >= 5x the training consumption; a trial's time to its first batch
from the cache (dataset opened, loader built, first batch out) <= 2 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _verdict import interleaved, median, table, verdict  # noqa: E402

from depthcore.config import ExperimentConfig  # noqa: E402
from depthcore.data.cache import ensure_nyu_cache  # noqa: E402
from depthcore.data.synthetic import generate_synthetic  # noqa: E402
from depthcore.engine import build_optimizer  # noqa: E402
from depthcore.loaders import train_val_loaders  # noqa: E402
from depthcore.losses import get_loss  # noqa: E402
from depthcore.models import create_model  # noqa: E402

RATIO_TARGET = 5.0
FIRST_BATCH_TARGET_S = 2.0


def config(paths: dict[str, Any], nyu: str, stage: str, size: int, batch: int, workers: int) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "model": {"name": "lraspp_3m"},
        "data": {"nyu_path": nyu, "split_file": str(paths["split_file"]), "diw_root": str(paths["diw_root"]),
                 "diw_train_csv": str(paths["diw_train_csv"]), "diw_test_csv": str(paths["diw_test_csv"]),
                 "size": [size, size], "batch_size": batch, "num_workers": workers, "augment": True},
        "train": {"stage": stage, "device": "cpu", **({"init_checkpoint": "unused"} if stage == "diw" else {})},
    })


def loader_rate(cfg: ExperimentConfig, max_batches: int) -> float:
    """Samples/s of the training loader over up to ``max_batches`` batches (one fresh epoch)."""
    loader, _ = train_val_loaders(cfg, torch.Generator().manual_seed(0))
    seen, start = 0, time.perf_counter()
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        seen += batch["image"].shape[0]
    return seen / (time.perf_counter() - start)


def first_batch_s(cfg: ExperimentConfig) -> float:
    """From nothing open to the first training batch, as a trial's ``fit`` does it."""
    start = time.perf_counter()
    loader, _ = train_val_loaders(cfg, torch.Generator().manual_seed(0))
    next(iter(loader))
    return time.perf_counter() - start


def training_rate(size: int, batch: int, steps: int) -> Any:
    """A closure returning LR-ASPP's training images/s over ``steps`` steps (bare loop, fp32 CPU)."""
    torch.manual_seed(0)
    model = create_model("lraspp_3m").train()
    optimizer = build_optimizer(model, ExperimentConfig.from_dict(
        {"data": {"nyu_path": "in-memory"}}).optim)
    loss_fn = get_loss("mse")
    image, depth = torch.rand(batch, 3, size, size), 0.5 + torch.rand(batch, 1, size, size)
    mask = torch.ones_like(depth, dtype=torch.bool)

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loss = loss_fn(model(image).float(), depth, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return steps * batch / (time.perf_counter() - start)

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small run (seconds): fewer, smaller frames")
    p.add_argument("--frames", type=int, default=96, help="synthetic NYU frames (about 55 %% train)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=6, help="batches per timed pass")
    p.add_argument("--workers", type=int, default=0, help="data.num_workers of the loaders")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.height, args.width, args.batches, args.repeats = 24, 120, 160, 2, 2
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="data-throughput-") as tmp:
        start = time.perf_counter()
        paths = generate_synthetic(tmp, num_frames=args.frames, height=args.height, width=args.width,
                                   diw_train=max(args.batch * (args.batches + 1) * 2, 32), diw_test=4, progress=False)
        generated = time.perf_counter() - start
        start = time.perf_counter()
        cache = ensure_nyu_cache(paths["nyu_mat"], (args.size, args.size), paths["split_file"], tmp, progress=False)
        prepared = time.perf_counter() - start
        print(f"synthetic data: {args.frames} frames {args.height}x{args.width} ({generated:.1f} s to generate); "
              f"cache at {args.size}x{args.size} prepared in {prepared:.1f} s; {args.threads} torch thread(s), "
              f"data.num_workers={args.workers}, batch {args.batch}", flush=True)
        cfg = {name: config(paths, nyu, stage, args.size, args.batch, args.workers)
               for name, nyu, stage in (("NYU cache", str(cache), "nyu"), ("DIW", str(cache), "diw"),
                                        ("NYU .mat", str(paths["nyu_mat"]), "nyu"))}
        first = [first_batch_s(cfg["NYU cache"]) for _ in range(args.repeats)]
        train = training_rate(args.size, args.batch, args.batches)
        train()  # warm-up
        setups = {name: (lambda c=c: loader_rate(c, args.batches)) for name, c in cfg.items()}
        runs = interleaved({**setups, "LR-ASPP training": train}, args.repeats)
    consumption = median(runs["LR-ASPP training"])
    rates = {name: median(values) for name, values in runs.items()}
    print(table(["set-up", "samples/s (median)", "x LR-ASPP training"],
                [[name, rate, rate / consumption] for name, rate in rates.items()]))
    first_s = median(first)
    print(f"time to the first batch from the cache: {first_s:.2f} s (median of {len(first)})")
    ratio = min(rates["NYU cache"], rates["DIW"]) / consumption
    ok = ratio >= RATIO_TARGET and first_s <= FIRST_BATCH_TARGET_S
    verdict("data_throughput", ratio, RATIO_TARGET, ok, ratio_nyu=rates["NYU cache"] / consumption,
            ratio_diw=rates["DIW"] / consumption, ratio_mat=rates["NYU .mat"] / consumption,
            first_batch_s=first_s, first_batch_target_s=FIRST_BATCH_TARGET_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
