"""MATLAB v7.3 (HDF5) reading and writing helpers, and a fork-safe lazy HDF5 handle.

A v7.3 MAT-file is an HDF5 file with a 512-byte user block holding a MATLAB text header.
MATLAB is column-major, so every array shows up in HDF5 with its axes reversed; strings in
cell arrays are object references into the ``#refs#`` group, each pointing at a uint16
column of character codes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from depthcore.errors import DataError

USERBLOCK_SIZE = 512
MAT_HEADER_TEXT = "MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 2015 HDF5 schema 1.00 ."


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 / v7.3 MAT-file read-only without file locking.

    Locking is off because many data-loader processes read the same file at once and
    some shared filesystems refuse HDF5's locks.
    """
    return h5py.File(path, "r", locking=False)


class LazyH5:
    """An HDF5 handle opened on first use in each process.

    h5py handles must not cross ``fork`` (DataLoader workers) or pickling, so the handle
    remembers the pid that opened it and is reopened in any other process; pickling
    drops it.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def get(self) -> h5py.File:
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            # A handle inherited from the parent belongs to the parent's HDF5 state:
            # drop the reference without closing it here.
            self._file = open_h5(self.path)
            self._pid = pid
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_file": None, "_pid": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def decode_char(ds: h5py.Dataset) -> str:
    """Decode a MATLAB ``char`` array (uint16 codes, any shape) into a Python string."""
    if ds.attrs.get("MATLAB_empty", 0):
        return ""
    codes = np.asarray(ds[()]).ravel()
    return "".join(chr(int(c)) for c in codes)


def read_cellstr(f: h5py.File, name: str) -> list[str]:
    """Read a MATLAB cell array of strings (a dataset of object references)."""
    if name not in f:
        raise DataError(f"{f.filename}: expected a dataset {name!r}, found {sorted(f.keys())}")
    refs = f[name]
    if refs.dtype != h5py.ref_dtype:
        raise DataError(
            f"{f.filename}: {name!r}: expected a cell array of object references, found dtype {refs.dtype}"
        )
    # A MATLAB 1xN or Nx1 cell arrives as (N, 1) or (1, N); element order is the same.
    return [decode_char(f[ref]) for ref in np.asarray(refs[()]).ravel()]


def _refs_name(i: int) -> str:
    """MATLAB-style names for ``#refs#`` members: a, b, ..., z, ba, bb, ..."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    name = letters[i % 26]
    i //= 26
    while i:
        name = letters[i % 26] + name
        i //= 26
    return name


def _set_class(obj: h5py.HLObject, matlab_class: str) -> None:
    obj.attrs.create("MATLAB_class", np.bytes_(matlab_class))


def create_numeric(
    f: h5py.File, name: str, shape: tuple[int, ...], dtype: np.dtype | type, matlab_class: str
) -> h5py.Dataset:
    """Create an array dataset, shape already in HDF5 (axes-reversed) order, with its MATLAB class."""
    chunks = (1, *shape[1:]) if len(shape) > 1 else None  # one frame per chunk, like reading
    ds = f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, track_times=False)
    _set_class(ds, matlab_class)
    return ds


def write_cellstr(f: h5py.File, name: str, strings: Sequence[str]) -> None:
    """Write a MATLAB N x 1 cell array of strings as MATLAB does: (1, N) refs into #refs#."""
    refs_group = f.require_group("#refs#")
    start = len(refs_group)
    refs = np.empty((1, len(strings)), dtype=h5py.ref_dtype)
    for k, text in enumerate(strings):
        codes = np.array([ord(c) for c in text], dtype=np.uint16).reshape(len(text), 1)
        ds = refs_group.create_dataset(_refs_name(start + k), data=codes, track_times=False)
        _set_class(ds, "char")
        ds.attrs.create("MATLAB_int_decode", np.int32(2))
        refs[0, k] = ds.ref
    cell = f.create_dataset(name, data=refs, dtype=h5py.ref_dtype, track_times=False)
    _set_class(cell, "cell")


def create_v73(path: str | os.PathLike) -> h5py.File:
    """Create an empty HDF5 file with MATLAB's 512-byte user block (header written later)."""
    return h5py.File(path, "w", userblock_size=USERBLOCK_SIZE, libver="earliest")


def write_v73_header(path: str | os.PathLike) -> None:
    """Write MATLAB's 128-byte text header into the user block of a closed file."""
    text = MAT_HEADER_TEXT.encode("ascii").ljust(116, b" ")
    # 8 bytes subsystem offset, then version 0x0200 and the endian indicator "IM".
    header = text + b" " * 8 + (0x0200).to_bytes(2, "little") + b"IM"
    with open(path, "r+b") as fh:
        fh.write(header)
