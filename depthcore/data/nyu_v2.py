"""NYU Depth V2 (labeled subset) as a torch Dataset, from the ``.mat`` or from our cache."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from depthcore.data import transforms as T
from depthcore.data.matfile import LazyH5
from depthcore.data.nyu_files import FileMeta, read_mat_frames, read_meta
from depthcore.data.splits import select_frames, train_test_split
from depthcore.errors import DataError

DEPTH_KINDS = ("filled", "raw")


class NyuDepthV2(Dataset):
    """Frames of NYU Depth V2 with per-frame dicts of tensors.

    Args:
        path: ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3) or a cache from ``prepare_nyu_cache``.
        split: "train", "val" or "test". Val is carved out of train by whole scenes.
        size: output (H, W) (int = square); ``None`` keeps the native resolution. A cache
            only serves the size it was written at.
        depth: "filled" (in-painted ``depths``) or "raw" (``rawDepths``, 0 = missing).
        split_file: MATLAB v5 file with 1-based ``trainNdxs`` / ``testNdxs``. ``None`` means
            the official split shipped with the package for a ``.mat``, and the split stored
            at preparation time for a cache.
        scheme: "official" (train/test from the split, val from train by scene) or
            "seed_random" (the seed study's random 70/15/15 frame split; ignores split files
            and ``val_fraction``).
        val_fraction, seed: size and seed of the scene-level val carve-out.
        augment: train only: random horizontal flip and mild colour jitter (torch RNG, so
            each DataLoader worker draws its own).
        full_res_gt: also return ``depth_full`` / ``valid_full``: raw depth at native size.

    Sample: ``image`` float32 (3, H, W) in [0, 1]; ``depth`` float32 (1, H, W) metres;
    ``valid_mask`` bool (1, H, W); ``index`` int (0-based frame in the file).
    Resizing: image bilinear with antialiasing; filled depth bilinear (no antialias) with a
    nearest-resized mask; raw depth and its mask nearest, so holes never blend into values.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str,
        size: int | tuple[int, int] | None = (200, 200),
        depth: str = "filled",
        split_file: str | os.PathLike | None = None,
        scheme: str = "official",
        val_fraction: float = 0.15,
        seed: int = 0,
        augment: bool = False,
        full_res_gt: bool = False,
    ) -> None:
        if depth not in DEPTH_KINDS:
            raise ValueError(f"depth must be one of {DEPTH_KINDS}, found {depth!r}")
        if augment and split != "train":
            raise ValueError(f"augment=True is only for split='train', found split={split!r}")
        meta = read_meta(path)
        self.path = meta.path
        self.source = meta.source
        self.native_size = meta.native_size
        self.size = T.as_size(size)
        self.depth_kind = depth
        self.split = split
        self.augment = augment
        self.full_res_gt = full_res_gt
        self._meta = meta
        if meta.source == "cache" and self.size != meta.size:
            raise DataError(
                f"{self.path}: cache holds frames at size {meta.size}, requested {self.size}; "
                f"prepare a cache at that size or load the .mat"
            )
        base = self._base_split(meta, split_file) if scheme == "official" else None
        self.indices = select_frames(split, scheme, meta.num_frames, meta.scenes, base, val_fraction, seed)
        self.scenes = [meta.scenes[i] for i in self.indices]
        if full_res_gt and meta.source == "cache":
            missing = [int(i) for i in self.indices if int(i) not in meta.full_rows]
            if missing:
                raise DataError(
                    f"{self.path}: cache has full-resolution depth only for its test frames; "
                    f"{len(missing)} frames of split {split!r} lack it (first 0-based: {missing[0]})"
                )
        self._h5 = LazyH5(self.path)

    @staticmethod
    def _base_split(meta: FileMeta, split_file: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:
        if split_file is None and meta.stored_split is not None:
            return meta.stored_split
        train, test, _ = train_test_split(meta.path, meta.num_frames, split_file)
        return train, test

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict[str, Any]:
        if not 0 <= k < len(self.indices):
            raise IndexError(f"index {k} out of range for {len(self.indices)} frames")
        frame = int(self.indices[k])
        sample = self._read_mat(frame) if self.source == "mat" else self._read_cache(frame)
        if self.augment:
            sample = self._augment(sample)
        sample["index"] = frame
        return sample

    def _read_mat(self, frame: int) -> dict[str, Any]:
        keys: tuple[str, ...] = ("image", "depth" if self.depth_kind == "filled" else "raw")
        if self.full_res_gt:
            keys += ("raw",)
        data = read_mat_frames(self._h5.get(), frame, frame + 1, keys)
        if self.depth_kind == "filled":
            depth, mask = T.resize_filled_depth(data["depth"], T.filled_valid(data["depth"]), self.size)
        else:
            depth, mask = T.resize_raw_depth(data["raw"], self.size)
        sample = {"image": T.resize_image(data["image"], self.size)[0], "depth": depth[0], "valid_mask": mask[0]}
        if self.full_res_gt:
            full, valid = T.resize_raw_depth(data["raw"], None)
            sample["depth_full"], sample["valid_full"] = full[0], valid[0]
        return sample

    def _read_cache(self, frame: int) -> dict[str, Any]:
        f = self._h5.get()
        image = torch.from_numpy(np.ascontiguousarray(f["images"][frame].transpose(2, 0, 1)))  # (3, h, w)
        depth_key, mask_key = ("depths", "valid_filled") if self.depth_kind == "filled" else ("raw_depths", "valid_raw")
        sample = {
            "image": image.float() / 255.0,
            "depth": torch.from_numpy(np.asarray(f[depth_key][frame], dtype=np.float32))[None],
            "valid_mask": torch.from_numpy(np.asarray(f[mask_key][frame], dtype=bool))[None],
        }
        if self.full_res_gt:
            mm = np.asarray(f["raw_depth_full_mm"][self._meta.full_rows[frame]])  # (H0, W0) uint16
            sample["depth_full"] = torch.from_numpy(mm.astype(np.float32) / 1000.0)[None]
            sample["valid_full"] = torch.from_numpy(mm > 0)[None]
        return sample

    @staticmethod
    def _augment(sample: dict[str, Any]) -> dict[str, Any]:
        if bool(torch.rand(()) < 0.5):
            for key in ("image", "depth", "valid_mask", "depth_full", "valid_full"):
                if key in sample:
                    sample[key] = sample[key].flip(-1)
        sample["image"] = T.color_jitter(sample["image"])
        return sample

    def close(self) -> None:
        """Close this process's file handle (it reopens on the next access)."""
        self._h5.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"] = LazyH5(self.path)  # never pickle an open handle
        return state

    def __repr__(self) -> str:
        return (
            f"NyuDepthV2({str(self.path)!r}, split={self.split!r}, frames={len(self)}, "
            f"size={self.size}, depth={self.depth_kind!r}, source={self.source!r})"
        )
