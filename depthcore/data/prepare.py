"""Command line: build dataset caches.

    python -m depthcore.data.prepare nyu --src nyu_depth_v2_labeled.mat --out nyu_200.h5 \
        [--size 200 200] [--split-file splits.mat]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from depthcore.data.cache import prepare_nyu_cache


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m depthcore.data.prepare", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="dataset", required=True)
    nyu = sub.add_parser("nyu", help="cache NYU Depth V2 (labeled .mat) at one resolution")
    nyu.add_argument("--src", type=Path, required=True, help="nyu_depth_v2_labeled.mat (MATLAB v7.3)")
    nyu.add_argument("--out", type=Path, required=True, help="cache file to write (HDF5)")
    nyu.add_argument("--size", type=int, nargs=2, default=(200, 200), metavar=("H", "W"))
    nyu.add_argument("--split-file", type=Path, default=None, help="MATLAB v5 trainNdxs/testNdxs (default: official)")
    nyu.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.src.is_file():
        print(f"error: {args.src}: source file not found", file=sys.stderr)
        return 2
    if args.split_file is not None and not args.split_file.is_file():
        print(f"error: {args.split_file}: split file not found", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        out = prepare_nyu_cache(args.src, args.out, tuple(args.size), args.split_file, progress=not args.quiet)
    except (ValueError, KeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    mib = out.stat().st_size / 2**20
    print(f"wrote {out} ({mib:.1f} MiB, size {args.size[0]}x{args.size[1]}) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
