"""DataLoaders for a training config: which dataset, split and batch settings each stage uses."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from depthcore.config import ConfigError, ExperimentConfig
from depthcore.data import DepthInTheWild, NyuDepthV2
from depthcore.stages import DEPTH_TASK, STAGES


def _existing(key: str, value: str | None) -> str:
    if not value:
        raise ConfigError(f"{key}: needed for this stage, found null")
    if not Path(value).exists():
        raise ConfigError(f"{key}: {value} does not exist")
    return value


def nyu_dataset(cfg: ExperimentConfig, split: str, *, full_res_gt: bool = False) -> NyuDepthV2:
    """The NYU Depth V2 split ``split`` at the config's size, from the ``.mat`` or its cache."""
    d = cfg.data
    return NyuDepthV2(
        _existing("data.nyu_path", d.nyu_path),
        split,
        size=(d.size[0], d.size[1]),
        depth=d.depth,
        split_file=d.split_file,
        scheme=d.scheme,
        val_fraction=d.val_fraction,
        seed=d.split_seed,
        augment=d.augment and split == "train",
        full_res_gt=full_res_gt,
    )


def diw_dataset(cfg: ExperimentConfig, subset: str) -> DepthInTheWild:
    """DIW pairs: ``train``/``val`` are carved from the train CSV, ``test`` is the test CSV."""
    d = cfg.data
    root = _existing("data.diw_root", d.diw_root)
    size = (d.size[0], d.size[1])
    if subset == "test":
        return DepthInTheWild(_existing("data.diw_test_csv", d.diw_test_csv), root, size=size)
    return DepthInTheWild(
        _existing("data.diw_train_csv", d.diw_train_csv),
        root,
        size=size,
        subset=subset,
        val_fraction=d.diw_val_fraction,
        seed=d.split_seed,
    )


def make_loader(
    dataset: Dataset,
    cfg: ExperimentConfig,
    *,
    train: bool,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> DataLoader:
    workers = cfg.data.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size or cfg.data.batch_size,
        shuffle=train,
        # Dropping the last partial training batch keeps BatchNorm away from batches of one;
        # the schedule and the epoch loss both count the batches that are actually run.
        drop_last=train and len(dataset) > (batch_size or cfg.data.batch_size),  # type: ignore[arg-type]
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
    )


def train_val_loaders(
    cfg: ExperimentConfig, generator: torch.Generator
) -> tuple[DataLoader, DataLoader]:
    """Training and validation loaders for the config's stage."""
    train_set: Dataset
    val_set: Dataset
    if STAGES[cfg.train.stage].task == DEPTH_TASK:
        train_set, val_set = nyu_dataset(cfg, "train"), nyu_dataset(cfg, "val")
    else:
        train_set, val_set = diw_dataset(cfg, "train"), diw_dataset(cfg, "val")
    return (
        make_loader(train_set, cfg, train=True, generator=generator),
        make_loader(val_set, cfg, train=False),
    )
