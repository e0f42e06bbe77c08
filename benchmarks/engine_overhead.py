"""depthcore's training epoch against a bare PyTorch loop: throughput ratio, same model, data and threads.

    python benchmarks/engine_overhead.py [--quick] [--threads 1] [--batches 1] [--repeats 40]

The data is in memory for both (pre-collated random batches at 200x200), so what differs is
the engine's step: ``depthcore.engine.train_one_epoch`` (learning-rate schedule per step, the
finite-loss check, the disabled GradScaler calls, the sample-weighted loss sum) against the
loop written below — forward, loss, backward, optimizer step and nothing else: no per-step
synchronisation, logging or metric work. Both use the same loss function (the config's), the
same AdamW settings and fp32 on CPU. Short epochs of the two alternate (engine, bare, engine,
...; default one batch each, so the engine's per-epoch work counts in full) after one warm-up
epoch each; the ratio is the median over rounds of engine images/s / bare images/s of the same
round, which a shared machine's load swings disturb far less than the two medians apart.

Target (firm): >= 0.95 for LR-ASPP and U-Net++ (aim 0.99).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _verdict import interleaved, median, table, verdict  # noqa: E402

from depthcore.config import ExperimentConfig  # noqa: E402
from depthcore.engine import _step_loss, build_optimizer, lr_at, train_one_epoch  # noqa: E402
from depthcore.losses import get_loss  # noqa: E402
from depthcore.models import create_model  # noqa: E402

MODELS = {"LR-ASPP": "lraspp_3m", "U-Net++": "unetpp_3m"}
TARGET, AIM = 0.95, 0.99


def batches_in_memory(count: int, batch: int, size: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(batch, 3, size, size, generator=gen),
             "depth": 0.5 + 9.5 * torch.rand(batch, 1, size, size, generator=gen),
             "valid_mask": torch.rand(batch, 1, size, size, generator=gen) > 0.1} for _ in range(count)]


def engine_epoch(model: torch.nn.Module, cfg: ExperimentConfig, optimizer: torch.optim.Optimizer,
                 data: list[dict[str, torch.Tensor]]) -> float:
    """One ``train_one_epoch`` as ``fit`` calls it on CPU; returns its images/s."""
    total = len(data)
    result = train_one_epoch(
        model, _step_loss(cfg), optimizer, data,  # type: ignore[arg-type]  # any iterable of batches
        device=torch.device("cpu"), scaler=torch.amp.GradScaler("cuda", enabled=False),
        lr_for_step=lambda s: lr_at(s, total, cfg.optim), first_step=0, max_batches=None,
        grad_clip=cfg.optim.grad_clip, amp=False, channels_last=False,
    )
    return result["train/images_per_s"]


def bare_epoch(model: torch.nn.Module, loss_fn: Any, optimizer: torch.optim.Optimizer,
               data: list[dict[str, torch.Tensor]]) -> float:
    """The hand-written loop; returns its images/s."""
    model.train()
    start = time.perf_counter()
    for batch in data:
        loss = loss_fn(model(batch["image"]).float(), batch["depth"], batch["valid_mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return sum(b["image"].shape[0] for b in data) / (time.perf_counter() - start)


def measure(name: str, size: int, batch: int, batches: int, repeats: int) -> dict[str, float]:
    cfg = ExperimentConfig.from_dict({"model": {"name": name}, "optim": {"lr": 1e-3, "schedule": "onecycle"},
                                      "train": {"loss": "mse", "device": "cpu", "amp": False},
                                      "data": {"nyu_path": "in-memory", "size": [size, size], "batch_size": batch}})
    data = batches_in_memory(batches, batch, size)
    torch.manual_seed(0)
    # Two copies with identical weights, each with its own optimizer: neither set-up trains the other's model.
    engine_model, bare_model = create_model(name), create_model(name)
    bare_model.load_state_dict(engine_model.state_dict())
    engine_opt, bare_opt = build_optimizer(engine_model, cfg.optim), build_optimizer(bare_model, cfg.optim)
    loss_fn = get_loss(cfg.train.loss)
    setups = {"engine": lambda: engine_epoch(engine_model, cfg, engine_opt, data),
              "bare": lambda: bare_epoch(bare_model, loss_fn, bare_opt, data)}
    interleaved(setups, 1)  # warm-up: allocator and oneDNN primitives
    runs = interleaved(setups, repeats)
    paired = [e / b for e, b in zip(runs["engine"], runs["bare"], strict=True)]
    return {"engine": median(runs["engine"]), "bare": median(runs["bare"]), "ratio": median(paired),
            "low": sorted(paired)[len(paired) // 4], "high": sorted(paired)[(3 * len(paired)) // 4]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small run (seconds): fewer batches and repeats")
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=1, help="batches per epoch")
    p.add_argument("--repeats", type=int, default=40, help="timed epochs per set-up (interleaved)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.batches, args.repeats = 64, 2, 1, 6
    torch.set_num_threads(args.threads)
    print(f"{args.size}x{args.size}, batch {args.batch}, {args.batches} batches per epoch, {args.repeats} epochs "
          f"per set-up interleaved, {args.threads} threads, fp32 CPU (torch {torch.__version__})", flush=True)
    results = {label: measure(name, args.size, args.batch, args.batches, args.repeats) for label, name in MODELS.items()}
    print(table(["model", "engine images/s (median)", "bare loop images/s (median)", "ratio (median of rounds)",
                 "ratio, quartiles"],
                [[label, r["engine"], r["bare"], r["ratio"], f"{r['low']:.3f} - {r['high']:.3f}"]
                 for label, r in results.items()]))
    ratios = {label: r["ratio"] for label, r in results.items()}
    worst = min(ratios.values())
    verdict("engine_overhead", worst, TARGET, worst >= TARGET, aim=AIM,
            **{f"ratio_{label}": value for label, value in ratios.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
