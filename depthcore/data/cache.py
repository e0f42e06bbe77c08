"""Compact, fast-to-read HDF5 cache of NYU Depth V2 at one training resolution.

The labeled ``.mat`` is 2.8 GB of float32 at 480x640; training at 200x200 needs ~40x less.
The cache stores exactly what :class:`~depthcore.data.nyu_v2.NyuDepthV2` would compute
from the ``.mat`` (uint8 image, float16 depths, bool masks), plus raw test depth at native
resolution in millimetres for the standard evaluation protocol. Layout: see
:mod:`depthcore.data.nyu_files`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

from depthcore.data import transforms as T
from depthcore.data.matfile import open_h5
from depthcore.data.nyu_files import CACHE_VERSION, CACHE_VERSION_ATTR, read_mat_frames, read_meta
from depthcore.data.splits import train_test_split

CHUNK_FRAMES = 32
# Masks are mostly True: light compression makes them nearly free on disk.
_MASK_FILTER = {"compression": "gzip", "compression_opts": 1}


def _to_mm(raw: torch.Tensor) -> np.ndarray:
    """Metres -> uint16 millimetres (0 stays 0 = missing; beyond 65.535 m saturates)."""
    mm = torch.nan_to_num(raw, nan=0.0).clamp(0.0, 65.535).mul(1000.0).round()
    return mm.numpy().astype(np.uint16)


def prepare_nyu_cache(
    src_mat: str | os.PathLike,
    out_path: str | os.PathLike,
    size: int | tuple[int, int] = (200, 200),
    split_file: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Write the cache of ``src_mat`` at ``size`` to ``out_path`` (atomically) and return it."""
    src, out = Path(src_mat), Path(out_path)
    meta = read_meta(src)
    if meta.source != "mat":
        raise ValueError(f"{src}: already a cache; pass the labeled .mat")
    hw = T.as_size(size)
    assert hw is not None
    n, (h0, w0) = meta.num_frames, meta.native_size
    train, test, split_source = train_test_split(src, n, split_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with open_h5(src) as f, h5py.File(tmp, "w") as g:
            g.attrs[CACHE_VERSION_ATTR] = CACHE_VERSION
            g.attrs.update({"height": hw[0], "width": hw[1], "native_height": h0, "native_width": w0})
            g.attrs["split_source"] = split_source
            g.attrs["source_file"] = src.name
            images = g.create_dataset("images", (n, *hw, 3), np.uint8, chunks=(1, *hw, 3))
            depths = g.create_dataset("depths", (n, *hw), np.float16, chunks=(1, *hw))
            raws = g.create_dataset("raw_depths", (n, *hw), np.float16, chunks=(1, *hw))
            valid_filled = g.create_dataset("valid_filled", (n, *hw), bool, chunks=(1, *hw), **_MASK_FILTER)
            valid_raw = g.create_dataset("valid_raw", (n, *hw), bool, chunks=(1, *hw), **_MASK_FILTER)
            g.create_dataset("scenes", data=np.array(meta.scenes, dtype=object), dtype=h5py.string_dtype())
            g.create_dataset("train_indices", data=train)
            g.create_dataset("test_indices", data=test)
            g.create_dataset("full_frames", data=test)
            full = g.create_dataset(
                "raw_depth_full_mm",
                (len(test), h0, w0),
                np.uint16,
                chunks=(1, h0, w0),
                compression="gzip",
                compression_opts=4,
            )
            full_rows = {int(frame): row for row, frame in enumerate(test)}
            step = max(1, n // 10)
            next_report = step
            for start in range(0, n, CHUNK_FRAMES):
                stop = min(n, start + CHUNK_FRAMES)
                data = read_mat_frames(f, start, stop, ("image", "depth", "raw"))
                image = T.resize_image(data["image"], hw)  # (B, 3, h, w)
                depth, mask = T.resize_filled_depth(data["depth"], T.filled_valid(data["depth"]), hw)
                raw, raw_mask = T.resize_raw_depth(data["raw"], hw)
                images[start:stop] = (image * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
                depths[start:stop] = depth[:, 0].numpy().astype(np.float16)
                raws[start:stop] = raw[:, 0].numpy().astype(np.float16)
                valid_filled[start:stop] = mask[:, 0].numpy()
                valid_raw[start:stop] = raw_mask[:, 0].numpy()
                native_raw, _ = T.resize_raw_depth(data["raw"], None)
                for b, frame in enumerate(range(start, stop)):
                    if frame in full_rows:
                        full[full_rows[frame]] = _to_mm(native_raw[b, 0])
                if progress and (stop >= next_report or stop == n):
                    print(f"prepare: {stop}/{n} frames", file=sys.stderr, flush=True)
                    next_report = stop + step
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
