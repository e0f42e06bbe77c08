"""The two-stage training engine: ``fit(cfg, report=..., resume_from=...)``.

Stage ``nyu`` trains a depth model on NYU Depth V2 with a per-pixel loss; stage ``diw``
fine-tunes a stage-1 checkpoint on Depth-in-the-Wild point pairs with the ranking loss.
Each epoch ends with an evaluation on the validation split, a checkpoint, and one call
of ``report(metrics, checkpoint_dir)`` — the seam the sweep plugs Ray Tune into.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from depthcore.checkpoint import load_checkpoint, restore_rng_state, save_checkpoint
from depthcore.config import ExperimentConfig, OptimConfig
from depthcore.errors import ConfigError
from depthcore.loaders import train_val_loaders
from depthcore.losses import get_loss, ranking_loss
from depthcore.metrics import DepthMetricAccumulator, OrdinalAccumulator, nyu_eval_prepare
from depthcore.models import create_model, model_from_spec
from depthcore.stages import DEPTH_TASK, STAGES, better, worst

Report = Callable[[dict[str, float], "str | None"], None]



# -- small pure pieces -------------------------------------------------------------------


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    ``total_steps`` must count optimizer steps, i.e. batches, not samples: the seed
    passed the dataset length and its one-cycle schedule never left warm-up.
    """
    if cfg.schedule == "constant":
        return cfg.lr
    warmup = int(cfg.warmup_fraction * total_steps)
    floor = cfg.lr / 25.0 if cfg.schedule == "onecycle" else 0.0
    if step < warmup:
        return floor + (cfg.lr - floor) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - 1 - warmup))
    end = cfg.lr / 1.0e4 if cfg.schedule == "onecycle" else 0.0
    return end + 0.5 * (cfg.lr - end) * (1.0 + math.cos(math.pi * progress))


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """``auto``, ``cpu`` or ``cuda`` as a torch device; ``cuda`` on a machine without one is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key}: expected a machine with a CUDA device for {name!r}, found none "
                          f"(torch {torch.__version__} sees no GPU); use 'cpu' or 'auto'")
    return torch.device(name)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _to(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if channels_last:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


def _autocast(device: torch.device, amp: bool):
    if device.type == "cuda" and amp:
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return nullcontext()


# -- one epoch of training, one evaluation ---------------------------------------------------


def train_one_epoch(
    model: nn.Module,
    step_loss: Callable[[nn.Module, dict[str, Any]], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    *,
    device: torch.device,
    scaler: torch.amp.GradScaler,
    lr_for_step: Callable[[int], float],
    first_step: int,
    max_batches: int | None,
    grad_clip: float | None,
    amp: bool,
    channels_last: bool,
) -> dict[str, float]:
    """Run one epoch; returns the sample-weighted mean loss and throughput."""
    model.train()
    loss_sum, seen, start = 0.0, 0, time.perf_counter()
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = _to(batch, device, channels_last)
        for group in optimizer.param_groups:
            group["lr"] = lr_for_step(first_step + i)
        with _autocast(device, amp):
            loss = step_loss(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at batch {i}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        n = batch["image"].shape[0]
        # Weight by the batch size so the epoch mean is the mean over samples actually seen.
        loss_sum += loss.item() * n
        seen += n
    elapsed = time.perf_counter() - start
    return {"train/loss_mean": loss_sum / max(seen, 1), "train/images_per_s": seen / max(elapsed, 1e-9)}


@torch.no_grad()
def evaluate_depth(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    full_res: bool = False,
    median_scale: bool = False,
    amp: bool = False,
) -> dict[str, float]:
    """Depth metrics over a loader: per image, then averaged over images.

    ``full_res`` compares against the samples' native-resolution raw depth
    (``depth_full``) with the standard NYU protocol; otherwise against ``depth`` at
    the training size. ``median_scale`` rescales each prediction to the ground
    truth's median first — needed for relative-depth (DIW fine-tuned) models.
    """
    model.eval()
    acc = DepthMetricAccumulator()
    for batch in loader:
        batch = _to(batch, device, channels_last=False)
        with _autocast(device, amp):
            pred = model(batch["image"]).float()  # (B, 1, H, W)
        gt, mask = (batch["depth_full"], batch["valid_full"]) if full_res else (batch["depth"], batch["valid_mask"])
        pred, gt, mask = nyu_eval_prepare(pred, gt, mask, median_scale=median_scale)
        acc.update(pred, gt, mask)
    return acc.compute()


@torch.no_grad()
def evaluate_ordinal(model: nn.Module, loader: DataLoader, device: torch.device, *, amp: bool = False) -> dict[str, float]:
    """DIW pair accuracy and WHDR over a loader."""
    model.eval()
    acc = OrdinalAccumulator()
    for batch in loader:
        batch = _to(batch, device, channels_last=False)
        with _autocast(device, amp):
            pred = model(batch["image"]).float()
        acc.update(pred, batch["points"], batch["relation"])
    return acc.compute()


# -- fit -------------------------------------------------------------------------------------


def _stage_model(cfg: ExperimentConfig) -> tuple[nn.Module, ExperimentConfig]:
    """The model to train; a fine-tuning stage (``diw``) rebuilds the stage-1 checkpoint's model and weights."""
    if not STAGES[cfg.train.stage].finetunes:
        return create_model(cfg.model.name, **cfg.model.args), cfg
    if not cfg.train.init_checkpoint:
        raise ConfigError(f"train.init_checkpoint: stage {cfg.train.stage} fine-tunes a stage-1 checkpoint, found null")
    init = load_checkpoint(cfg.train.init_checkpoint)
    spec = init["model"]
    model = model_from_spec(spec)  # the checkpoint supplies the weights: no pretrained download
    model.load_state_dict(init["state_dict"])
    raw = cfg.to_dict()
    raw["model"] = {"name": spec["name"], "args": dict(spec["args"])}
    return model, ExperimentConfig.from_dict(raw)


def _step_loss(cfg: ExperimentConfig) -> Callable[[nn.Module, dict[str, Any]], torch.Tensor]:
    if STAGES[cfg.train.stage].task != DEPTH_TASK:
        return lambda model, b: ranking_loss(model(b["image"]).float(), b["points"], b["relation"])
    depth_loss = get_loss(cfg.train.loss)
    return lambda model, b: depth_loss(model(b["image"]).float(), b["depth"], b["valid_mask"])


def _format(metrics: dict[str, float], keys: list[str]) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)


def fit(
    cfg: ExperimentConfig | dict[str, Any],
    report: Report | None = None,
    resume_from: str | Path | None = None,
    on_model: Callable[[nn.Module], None] | None = None,
) -> dict[str, Any]:
    """Train ``cfg``'s stage; returns the best and last metrics and checkpoint paths.

    ``report(metrics, checkpoint_dir)`` is called once per epoch with ``epoch``,
    ``train/*``, ``val/*`` and ``lr`` keys and the directory of that epoch's checkpoint.
    ``resume_from`` (a checkpoint written by an earlier ``fit`` of the same config)
    continues at the next epoch with the saved weights, optimizer and RNG states.
    ``on_model(model)`` is called once the model is built (e.g. to count its parameters
    without building it a second time).
    """
    if isinstance(cfg, dict):
        cfg = ExperimentConfig.from_dict(cfg)
    t = cfg.train
    if t.threads is not None:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    device = resolve_device(t.device)
    model, cfg = _stage_model(cfg)
    if on_model is not None:
        on_model(model)
    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)

    shuffle = torch.Generator()
    train_loader, val_loader = train_val_loaders(cfg, shuffle)
    batches = len(train_loader) if t.max_batches_per_epoch is None else min(len(train_loader), t.max_batches_per_epoch)
    total_steps = batches * t.epochs
    optimizer = build_optimizer(model, cfg.optim)
    use_amp = t.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    metric_name, mode = cfg.selection
    step_loss = _step_loss(cfg)
    out_dir = Path(t.out_dir)

    best: dict[str, Any] = {"value": worst(mode), "epoch": 0, "dir": None}
    start_epoch, history = 0, []
    if resume_from is not None:
        state = load_checkpoint(resume_from, map_location=device)
        if state["model"] != cfg.to_dict()["model"]:
            raise ConfigError(f"{resume_from}: expected a checkpoint of model {cfg.to_dict()['model']} (the config's), "
                              f"found {state['model']}")
        model.load_state_dict(state["state_dict"])
        if state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        else:  # a weights-only checkpoint (drop_optimizer_state): training goes on with a fresh optimizer
            print(f"{resume_from}: no optimizer state in the checkpoint; resuming with a fresh optimizer", flush=True)
        if state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        start_epoch = state["epoch"]
        best = dict(state["extra"].get("best", best))
        history = list(state["extra"].get("history", []))

    if t.verbose:
        print(f"[{t.stage}] {cfg.model.name} {cfg.model.args} on {device}: {len(train_loader.dataset)} train / "  # type: ignore[arg-type]
              f"{len(val_loader.dataset)} val samples, {batches} batches x {t.epochs} epochs", flush=True)  # type: ignore[arg-type]
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, t.epochs):
        start = time.perf_counter()
        # Reseeding per epoch makes the shuffle order a function of (seed, epoch): a resumed
        # run sees exactly the batches the uninterrupted run would have seen.
        shuffle.manual_seed(t.seed * 1_000_003 + epoch)
        train = train_one_epoch(
            model, step_loss, optimizer, train_loader,
            device=device, scaler=scaler, lr_for_step=lambda s: lr_at(s, total_steps, cfg.optim),
            first_step=epoch * batches, max_batches=t.max_batches_per_epoch,
            grad_clip=cfg.optim.grad_clip, amp=use_amp, channels_last=t.channels_last,
        )
        if STAGES[t.stage].task == DEPTH_TASK:
            val = evaluate_depth(model, val_loader, device, amp=use_amp)
        else:
            val = evaluate_ordinal(model, val_loader, device, amp=use_amp)
        metrics = {"epoch": float(epoch + 1), **train, **{f"val/{k}": v for k, v in val.items()},
                   "lr": optimizer.param_groups[0]["lr"], "time/epoch_s": time.perf_counter() - start}
        history.append({k: float(v) for k, v in metrics.items()})
        value = metrics[metric_name]
        improved = better(value, best["value"], mode)
        epoch_dir = out_dir / "checkpoints" / f"epoch_{epoch + 1:04d}"
        if improved:
            best = {"value": float(value), "epoch": epoch + 1, "dir": str(out_dir / "best")}
        extra = {"best": best, "history": history, "selection": {"metric": metric_name, "mode": mode}}
        save_checkpoint(epoch_dir, model=model, config=cfg.to_dict(), epoch=epoch + 1, metrics=metrics,
                        optimizer=optimizer, scaler=scaler, extra=extra)
        if improved:
            # Weights only: evaluation and export need no optimizer state, and resuming
            # starts from the newest epoch, which keeps it.
            save_checkpoint(out_dir / "best", model=model, config=cfg.to_dict(), epoch=epoch + 1,
                            metrics=metrics, extra=extra)
        _prune(out_dir, keep=epoch_dir if t.keep_last else None)
        if t.verbose:
            print(f"[{t.stage}] epoch {epoch + 1}/{t.epochs}  "
                  f"{_format(metrics, ['train/loss_mean', metric_name, 'val/d1', 'val/abs_rel', 'val/accuracy'])}  "
                  f"({metrics['time/epoch_s']:.1f} s, {train['train/images_per_s']:.1f} img/s)"
                  f"{'  *best' if improved else ''}", flush=True)
        if report is not None:
            report(metrics, str(epoch_dir) if epoch_dir.exists() else None)
    return {
        "metrics": metrics,
        "history": history,
        "best_metric": metric_name,
        "best_value": best["value"],
        "best_epoch": best["epoch"],
        "best_checkpoint": str(out_dir / "best"),
        "config": cfg.to_dict(),
    }


def _prune(out_dir: Path, keep: Path | None) -> None:
    """Keep only the newest epoch's checkpoint (``best/`` holds the best one).

    Also drops the temporary files of a save that a killed process left in ``best/``, so a
    resumed run stays within the same bound.
    """
    for old in (out_dir / "checkpoints").glob("epoch_*"):
        if keep is None or old != keep:
            shutil.rmtree(old, ignore_errors=True)
    for stale in (out_dir / "best").glob("*.tmp"):
        stale.unlink(missing_ok=True)
