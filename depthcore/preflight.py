"""Checks before compute: everything a run reads or writes is tested before anything is written.

Each check raises a one-line :class:`~depthcore.errors.UserError` naming the file (and line
or key), what was expected and what was found. ``depthcore.train``, ``depthcore.evaluate``
and ``depthcore.data.prepare`` run them before they create any output, and the sweep can run
:func:`check_data` once before it starts Ray.

What is read: the NYU file's layout and its first and last frame; the split file; every
line of each DIW CSV; the existence of every image a CSV names (one ``stat`` each); and a
full decode of :data:`DIW_IMAGE_SAMPLE` images per CSV, evenly spaced over the CSV (first
and last included). ``benchmarks/preflight_cost.py`` measured 4.7 s for parsing and
``stat``-ing 100 k pairs and 6.7 ms per decoded 640x480 JPEG: decoding all ~421 k images of
the real ``DIW_train_val.csv`` would take about 47 minutes, so a corrupt image outside the
sample is reported when training reaches it, by the same one-line error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from depthcore.checkpoint import load_checkpoint
from depthcore.config import ExperimentConfig
from depthcore.data.diw import image_line, load_image, parse_diw_csv
from depthcore.data.matfile import open_h5
from depthcore.data.nyu_files import FileMeta, read_mat_frames, read_meta
from depthcore.data.splits import load_split_file, train_test_split
from depthcore.engine import resolve_device
from depthcore.errors import ConfigError, DataError, MissingFileError

DIW_IMAGE_SAMPLE = 32
"""Images per DIW CSV that :func:`check_data` decodes in full."""


def check_device(name: str, key: str = "train.device") -> None:
    """``cuda`` on a machine without a CUDA device is refused."""
    resolve_device(name, key)


def check_output_dir(path: str | os.PathLike, key: str) -> None:
    """``path`` is a folder, or one can be made there: no file in the way, the nearest folder writable.

    Creates nothing.
    """
    target = Path(path).absolute()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{key}: expected a folder at {target}, found a file")
    ancestor = target
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{key}: expected a folder at {target}, found the file {ancestor} in the way")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: expected a writable folder for {target}, found {ancestor} not writable")


def check_output_file(path: str | os.PathLike, key: str) -> None:
    """``path`` can be written as a file: not a folder, and its folder can exist."""
    target = Path(path).absolute()
    if target.is_dir():
        raise ConfigError(f"{key}: expected a file path, found the folder {target}")
    check_output_dir(target.parent, key)


def _existing(path: str, key: str, kind: str) -> Path:
    p = Path(path)
    if kind == "folder" and not p.is_dir():
        found = "a file" if p.exists() else "nothing"
        raise MissingFileError(f"{key}: expected a folder at {p}, found {found}")
    if kind == "file" and not p.is_file():
        found = "a folder" if p.exists() else "nothing"
        raise MissingFileError(f"{key}: expected a file at {p}, found {found}")
    return p


def _read_ends(meta: FileMeta) -> None:
    """Read the first and last frame: a file cut short or damaged in its data fails here."""
    with open_h5(meta.path) as f:
        for frame in sorted({0, meta.num_frames - 1}):
            try:
                if meta.source == "mat":
                    read_mat_frames(f, frame, frame + 1, ("image", "depth", "raw"))
                else:
                    for name in ("images", "depths", "raw_depths", "valid_filled", "valid_raw"):
                        np.asarray(f[name][frame])
            except (OSError, KeyError, ValueError) as exc:
                reason = " ".join(str(exc).split())
                raise DataError(f"{meta.path}: frame {frame}: expected readable data, found an error ({reason})") from None


def check_nyu(cfg: ExperimentConfig) -> FileMeta:
    """The NYU file's layout, its first and last frame, the cache's size and the split."""
    d = cfg.data
    assert d.nyu_path is not None
    path = _existing(d.nyu_path, "data.nyu_path", "file")
    meta = read_meta(path)
    size = (d.size[0], d.size[1])
    if meta.source == "cache" and meta.size != size:
        raise DataError(f"{path}: data.size: expected a cache at {list(size)}, found one at {list(meta.size or ())}")
    _read_ends(meta)
    if d.split_file is not None:
        load_split_file(_existing(d.split_file, "data.split_file", "file"), meta.num_frames)
    elif d.scheme == "official" and meta.source == "mat":
        train_test_split(path, meta.num_frames, None)
    return meta


def check_diw_csv(csv_path: str | os.PathLike, root: str | os.PathLike, sample: int | None = DIW_IMAGE_SAMPLE) -> int:
    """Parse every line, check every image exists, decode ``sample`` of them (None: all); returns the pair count."""
    root = Path(root)
    pairs = parse_diw_csv(csv_path)
    first_index: dict[str, int] = {}
    for index, pair in enumerate(pairs):
        first_index.setdefault(pair.image, index)
    for name, index in first_index.items():
        if not (root / name).is_file():
            raise MissingFileError(f"{root / name}: image named at {csv_path}:{image_line(index)} not found")
    names = list(first_index)
    count = len(names) if sample is None else min(sample, len(names))
    chosen = sorted({int(k) for k in np.linspace(0, len(names) - 1, num=count)}) if count else []
    for k in chosen:
        name = names[k]
        load_image(root, name, f"{csv_path}:{image_line(first_index[name])}", None)
    return len(pairs)


def check_data(cfg: ExperimentConfig, diw_sample: int | None = DIW_IMAGE_SAMPLE) -> None:
    """Every data file the config names: NYU file and split, DIW CSVs and images, the stage-1 checkpoint.

    Writes nothing. The device is :func:`check_device`'s: a checkpoint trained on a GPU
    names ``cuda`` and may still be evaluated on a CPU.
    """
    d = cfg.data
    if d.nyu_path:
        check_nyu(cfg)
    elif d.split_file:
        _existing(d.split_file, "data.split_file", "file")
    csvs = [(key, getattr(d, key)) for key in ("diw_train_csv", "diw_test_csv") if getattr(d, key)]
    if csvs:
        if not d.diw_root:
            raise ConfigError(f"data.diw_root: expected the folder the DIW CSV image paths are relative to, "
                              f"found null (data.{csvs[0][0]} is set)")
        root = _existing(d.diw_root, "data.diw_root", "folder")
        for key, csv in csvs:
            check_diw_csv(_existing(csv, f"data.{key}", "file"), root, diw_sample)
    if cfg.train.init_checkpoint:
        checkpoint = Path(cfg.train.init_checkpoint)
        if not checkpoint.exists():
            raise MissingFileError(f"train.init_checkpoint: expected a checkpoint at {checkpoint}, found nothing")
        load_checkpoint(checkpoint)


def check_run(cfg: ExperimentConfig, diw_sample: int | None = DIW_IMAGE_SAMPLE) -> None:
    """What ``fit(cfg)`` needs: the device, a usable ``train.out_dir``, and :func:`check_data`."""
    check_device(cfg.train.device)
    check_output_dir(cfg.train.out_dir, "train.out_dir")
    check_data(cfg, diw_sample)
