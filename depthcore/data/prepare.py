"""Command line: build dataset caches.

    python -m depthcore.data.prepare nyu --src nyu_depth_v2_labeled.mat (--out nyu_200.h5 | --cache-dir DIR) \
        [--size 200 200] [--split-file splits.mat]

With ``--cache-dir`` the cache is named after its identity (:func:`~depthcore.data.cache.cache_path_for`)
and a matching cache already there is reused. Every input is checked before anything is
written: a mistake is one line ``error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from depthcore.data.cache import ensure_nyu_cache, prepare_nyu_cache
from depthcore.data.nyu_files import read_meta
from depthcore.data.splits import load_split_file
from depthcore.errors import ConfigError, DataError, MissingFileError, UserError, report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m depthcore.data.prepare", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="dataset", required=True)
    nyu = sub.add_parser("nyu", help="cache NYU Depth V2 (labeled .mat) at one resolution")
    nyu.add_argument("--src", type=Path, required=True, help="nyu_depth_v2_labeled.mat (MATLAB v7.3)")
    out = nyu.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", type=Path, help="cache file to write (HDF5)")
    out.add_argument("--cache-dir", type=Path, help="folder of caches named by identity; a matching one is reused")
    nyu.add_argument("--size", type=int, nargs=2, default=(200, 200), metavar=("H", "W"))
    nyu.add_argument("--split-file", type=Path, default=None, help="MATLAB v5 trainNdxs/testNdxs (default: official)")
    nyu.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def _check(args: argparse.Namespace) -> None:
    """Everything the preparation reads or writes, before it writes anything."""
    # Imported here: depthcore.preflight pulls in the models, which preparing never needs.
    from depthcore.preflight import check_output_dir, check_output_file

    if not args.src.is_file():
        raise MissingFileError(f"--src: expected the labeled .mat at {args.src}, found {'a folder' if args.src.exists() else 'nothing'}")
    if min(args.size) < 8:
        raise ConfigError(f"--size: expected H W of at least 8, found {args.size[0]} {args.size[1]}")
    meta = read_meta(args.src)
    if meta.source != "mat":
        raise DataError(f"{args.src}: expected the labeled .mat, found a cache written by prepare")
    if args.split_file is not None:
        if not args.split_file.is_file():
            raise MissingFileError(f"--split-file: expected a file at {args.split_file}, found nothing")
        load_split_file(args.split_file, meta.num_frames)
    if args.out is not None:
        check_output_file(args.out, "--out")
    else:
        check_output_dir(args.cache_dir, "--cache-dir")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    size = (args.size[0], args.size[1])
    try:
        _check(args)
        if args.out is not None:
            out = prepare_nyu_cache(args.src, args.out, size, args.split_file, progress=not args.quiet)
        else:
            out = ensure_nyu_cache(args.src, size, args.split_file, args.cache_dir, progress=not args.quiet)
    except UserError as err:
        return report(err)
    except OSError as exc:  # the disk, not the input: e.g. full while writing
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    mib = out.stat().st_size / 2**20
    print(f"wrote {out} ({mib:.1f} MiB, size {args.size[0]}x{args.size[1]}) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
