"""Compact, fast-to-read HDF5 cache of NYU Depth V2 at one training resolution.

The labeled ``.mat`` is 2.8 GB of float32 at 480x640; training at 200x200 needs ~40x less.
The cache stores exactly what :class:`~depthcore.data.nyu_v2.NyuDepthV2` would compute
from the ``.mat`` (uint8 image, float16 depths, bool masks), plus raw test depth at native
resolution in millimetres for the standard evaluation protocol. Layout: see
:mod:`depthcore.data.nyu_files`.

A cache is named and stamped with its identity (:func:`cache_path_for`): the source file's
content fingerprint, the prepared size, the split and the cache version. A different
``.mat`` with the same name therefore gets another cache, and :func:`ensure_nyu_cache`
rebuilds a cache whose recorded identity does not match instead of training on it.

The fingerprint is the file size plus SHA-256 over 16 blocks of 1 MiB at evenly spaced
offsets (the first and last MiB included; a file under 16 MiB is hashed whole). It reads
16 MiB whatever the file's size, and it leaves out the modification time on purpose: a
copy of the same file (another node, another disk) keeps its cache. Its limit: an edit in
place that keeps the size and touches only bytes between the sampled blocks goes unnoticed;
delete the cache after such an edit.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from importlib import resources
from pathlib import Path

import h5py
import numpy as np
import torch

from depthcore.data import transforms as T
from depthcore.data.matfile import open_h5
from depthcore.data.nyu_files import CACHE_VERSION, CACHE_VERSION_ATTR, read_mat_frames, read_meta
from depthcore.data.splits import OFFICIAL_SPLIT_RESOURCE, train_test_split
from depthcore.errors import DataError

CHUNK_FRAMES = 32
FINGERPRINT_BLOCK = 1 << 20
FINGERPRINT_BLOCKS = 16
# HDF5 attributes holding a cache's identity (compared by ensure_nyu_cache).
IDENTITY_ATTRS = ("source_fingerprint", "split_fingerprint", "cache_key")
# Masks are mostly True: light compression makes them nearly free on disk.
_MASK_FILTER = {"compression": "gzip", "compression_opts": 1}


def _to_mm(raw: torch.Tensor) -> np.ndarray:
    """Metres -> uint16 millimetres (0 stays 0 = missing; beyond 65.535 m saturates)."""
    mm = torch.nan_to_num(raw, nan=0.0).clamp(0.0, 65.535).mul(1000.0).round()
    return mm.numpy().astype(np.uint16)


def source_fingerprint(path: str | os.PathLike) -> str:
    """``"<size>-<sha256>"`` of a file: its size and 16 sampled 1 MiB blocks (module docstring)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(f"{size}:".encode())
    with open(path, "rb") as fh:
        if size <= FINGERPRINT_BLOCKS * FINGERPRINT_BLOCK:
            digest.update(fh.read())
        else:
            span = size - FINGERPRINT_BLOCK
            for k in range(FINGERPRINT_BLOCKS):
                fh.seek(k * span // (FINGERPRINT_BLOCKS - 1))
                digest.update(fh.read(FINGERPRINT_BLOCK))
    return f"{size}-{digest.hexdigest()}"


def split_fingerprint(split_file: str | os.PathLike | None) -> str:
    """The split's identity: SHA-256 of the split file, or of the shipped official split."""
    if split_file is None:
        text = resources.files("depthcore.data").joinpath(OFFICIAL_SPLIT_RESOURCE).read_bytes()
        return "official-" + hashlib.sha256(text).hexdigest()
    return "file-" + hashlib.sha256(Path(split_file).read_bytes()).hexdigest()


def _identity(source: Path, hw: tuple[int, int], split_file: str | os.PathLike | None) -> dict[str, str]:
    ident = {"source_fingerprint": source_fingerprint(source), "split_fingerprint": split_fingerprint(split_file)}
    text = json.dumps({**ident, "size": list(hw), "version": CACHE_VERSION}, sort_keys=True)
    return {**ident, "cache_key": hashlib.sha256(text.encode()).hexdigest()[:16]}


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    hw = T.as_size(size)
    assert hw is not None
    return hw


def cache_path_for(
    source: str | os.PathLike,
    size: int | tuple[int, int],
    split_file: str | os.PathLike | None,
    folder: str | os.PathLike,
) -> Path:
    """Where the cache of ``source`` at ``size`` with this split lives in ``folder``.

    The name carries the identity key: ``<stem>_cache_<H>x<W>_<key>.h5``.
    """
    source, hw = Path(source), _hw(size)
    key = _identity(source, hw, split_file)["cache_key"]
    return Path(folder) / f"{source.stem}_cache_{hw[0]}x{hw[1]}_{key}.h5"


def cache_mismatch(
    cache: str | os.PathLike,
    source: str | os.PathLike,
    size: int | tuple[int, int],
    split_file: str | os.PathLike | None,
) -> str | None:
    """Why ``cache`` is not the cache of ``source`` at ``size`` with this split, or None when it is."""
    want = _identity(Path(source), _hw(size), split_file)
    try:
        with open_h5(cache) as f:
            found = {k: f.attrs.get(k) for k in IDENTITY_ATTRS}
    except OSError as exc:
        return f"unreadable ({' '.join(str(exc).split())})"
    for key in IDENTITY_ATTRS:
        value = found[key]
        value = value.decode() if isinstance(value, bytes) else value
        if value != want[key]:
            return f"{key}: expected {want[key]}, found {value}"
    return None


def ensure_nyu_cache(
    source: str | os.PathLike,
    size: int | tuple[int, int],
    split_file: str | os.PathLike | None,
    folder: str | os.PathLike,
    progress: bool = True,
) -> Path:
    """The cache of ``source`` in ``folder``: reused when its recorded identity matches, else (re)built."""
    cache = cache_path_for(source, size, split_file, folder)
    if cache.is_file():
        reason = cache_mismatch(cache, source, size, split_file)
        if reason is None:
            return cache
        print(f"rebuilding the NYU cache {cache}: it does not match {source} ({reason})", file=sys.stderr, flush=True)
    elif progress:
        print(f"preparing the NYU cache {cache}", file=sys.stderr, flush=True)
    return prepare_nyu_cache(source, cache, size, split_file, progress=progress)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_stale_temporaries(out: Path, host: str) -> None:
    """Remove the temporary files of preparations on this host whose process is gone (killed)."""
    for tmp in out.parent.glob(f".{out.name}.{host}.*.tmp"):
        pid = tmp.name[len(f".{out.name}.{host}.") : -len(".tmp")]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def prepare_nyu_cache(
    src_mat: str | os.PathLike,
    out_path: str | os.PathLike,
    size: int | tuple[int, int] = (200, 200),
    split_file: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Write the cache of ``src_mat`` at ``size`` to ``out_path`` and return it.

    The cache is written to a temporary file in the same folder (``.<name>.<host>.<pid>.tmp``)
    and renamed when complete, so a process killed mid-way leaves nothing at ``out_path``;
    the next preparation on the host removes such leftovers.
    """
    src, out = Path(src_mat), Path(out_path)
    meta = read_meta(src)
    if meta.source != "mat":
        raise DataError(f"{src}: expected the labeled .mat, found a cache")
    hw = _hw(size)
    n, (h0, w0) = meta.num_frames, meta.native_size
    train, test, split_source = train_test_split(src, n, split_file)
    identity = _identity(src, hw, split_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().replace("/", "_")
    _drop_stale_temporaries(out, host)
    tmp = out.with_name(f".{out.name}.{host}.{os.getpid()}.tmp")
    try:
        with open_h5(src) as f, h5py.File(tmp, "w") as g:
            g.attrs[CACHE_VERSION_ATTR] = CACHE_VERSION
            g.attrs.update(identity)
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
