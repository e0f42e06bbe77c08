"""GPU training throughput of depthcore's engine against a bare loop, per architecture, and peak memory.

    python benchmarks/gpu_throughput.py [--rehearsal] [--size 200] [--batch 32] [--steps 20] [--repeats 3]

Run by ``benchmarks/gpu_check.sh`` on a machine with a CUDA GPU (no Ray, no MLflow: depthcore
only). For each architecture: images/s of ``depthcore.engine.train_one_epoch`` on in-memory
batches with the engine's mixed precision (``train.amp``: float16 autocast + GradScaler) and
``channels_last``, against a bare loop with the same precision and memory format, interleaved;
the bare loop again in bfloat16 autocast (no scaler) for reference; and the peak GPU memory of
an engine epoch. ``--rehearsal`` runs the same code on the CPU at a tiny size, in fp32, so the
script is known to work before a GPU's short time is spent on it.

Target: engine >= 0.95x the bare loop for every architecture (as on the CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _verdict import interleaved, median, table, verdict  # noqa: E402

from depthcore.config import ExperimentConfig  # noqa: E402
from depthcore.engine import _step_loss, build_optimizer, lr_at, train_one_epoch  # noqa: E402
from depthcore.losses import get_loss  # noqa: E402
from depthcore.models import create_model  # noqa: E402

ARCHITECTURES = ("lraspp_3m", "unetpp_3m", "segformer_3m", "dpt_7m")
TARGET = 0.95


def batches(count: int, batch: int, size: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(batch, 3, size, size, generator=gen).to(device),
             "depth": (0.5 + 9.5 * torch.rand(batch, 1, size, size, generator=gen)).to(device),
             "valid_mask": (torch.rand(batch, 1, size, size, generator=gen) > 0.1).to(device)} for _ in range(count)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def setups(name: str, data: list[dict[str, Any]], device: torch.device, amp: bool) -> dict[str, Any]:
    cfg = ExperimentConfig.from_dict({"model": {"name": name}, "optim": {"lr": 1e-3}, "data": {"nyu_path": "in-memory"},
                                      "train": {"loss": "mse", "amp": amp, "channels_last": True}})
    torch.manual_seed(0)
    models = [create_model(name).to(device).to(memory_format=torch.channels_last) for _ in range(3)]
    for model in models[1:]:
        model.load_state_dict(models[0].state_dict())
    optimizers = [build_optimizer(model, cfg.optim) for model in models]
    loss_fn, step_loss = get_loss("mse"), _step_loss(cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    images = sum(b["image"].shape[0] for b in data)

    def engine() -> float:
        sync(device)
        start = time.perf_counter()
        train_one_epoch(models[0], step_loss, optimizers[0], data, device=device,  # type: ignore[arg-type]
                        scaler=scaler, lr_for_step=lambda s: lr_at(s, len(data), cfg.optim), first_step=0,
                        max_batches=None, grad_clip=None, amp=amp, channels_last=True)
        sync(device)
        return images / (time.perf_counter() - start)

    def bare(index: int, dtype: torch.dtype | None) -> float:
        model, optimizer = models[index], optimizers[index]
        bare_scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
        model.train()
        sync(device)
        start = time.perf_counter()
        for batch in data:
            image = batch["image"].contiguous(memory_format=torch.channels_last)
            context = torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()
            with context:
                loss = loss_fn(model(image).float(), batch["depth"], batch["valid_mask"])
            optimizer.zero_grad(set_to_none=True)
            bare_scaler.scale(loss).backward()
            bare_scaler.step(optimizer)
            bare_scaler.update()
        sync(device)
        return images / (time.perf_counter() - start)

    out = {"engine": engine, "bare": lambda: bare(1, torch.float16 if amp else None)}
    if amp:
        out["bare bf16"] = lambda: bare(2, torch.bfloat16)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rehearsal", action="store_true", help="on the CPU, tiny sizes, fp32: checks the script only")
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="batches per timed epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", nargs="+", default=list(ARCHITECTURES))
    args = p.parse_args(argv)
    if args.rehearsal:
        device, amp = torch.device("cpu"), False
        torch.set_num_threads(1)  # a shared CPU: several threads per process only wait for each other
        args.size, args.batch, args.steps, args.repeats, args.models = 64, 2, 1, 1, ["lraspp_3m", "unetpp_3m"]
    else:
        if not torch.cuda.is_available():
            print("error: no CUDA device (use --rehearsal on a CPU machine)", file=sys.stderr)
            return 2
        device, amp = torch.device("cuda"), True
        torch.backends.cudnn.benchmark = True
    where = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (rehearsal)"
    print(f"{where}, torch {torch.__version__}, {args.size}x{args.size}, batch {args.batch}, {args.steps} steps per "
          f"epoch, {'fp16 AMP' if amp else 'fp32'}, channels_last, median of {args.repeats}", flush=True)
    rows, ratios = [], {}
    for name in args.models:
        data = batches(args.steps, args.batch, args.size, device)
        runs = setups(name, data, device, amp)
        interleaved(runs, 1)  # warm-up: cuDNN autotuning, allocator
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        measured = {k: median(v) for k, v in interleaved(runs, args.repeats).items()}
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        ratios[name] = measured["engine"] / measured["bare"]
        rows.append([name, measured["engine"], measured["bare"], measured.get("bare bf16", ""), ratios[name], peak])
        print(f"{name}: " + ", ".join(f"{k} {v:.1f} images/s" for k, v in measured.items()), flush=True)
        del runs, data
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(table(["model", "engine images/s", "bare images/s", "bare bf16 images/s", "ratio", "peak GiB (all set-ups)"],
                rows))
    worst = min(ratios.values())
    verdict("gpu_throughput", worst, TARGET, worst >= TARGET, rehearsal=args.rehearsal,
            **{f"ratio_{k}": v for k, v in ratios.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
