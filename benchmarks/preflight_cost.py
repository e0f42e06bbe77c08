"""What the checks before compute cost: the NYU cache fingerprint and the DIW CSV / image checks.

    python benchmarks/preflight_cost.py [--gib 2.8] [--pairs 100000] [--workdir DIR]

Writes a file of ``--gib`` GiB (the real labeled .mat is 2.8 GB) and times the sampled
fingerprint against hashing the whole file; writes a DIW-style CSV of ``--pairs`` pairs over
as many distinct 640x480 JPEGs (hard links of a few files: ``stat`` and decode cost per
file, not per distinct content) and times parsing every line, ``stat`` of every image, and
full decodes per image. The real ``DIW_train_val.csv`` has about 421 k pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from depthcore.data.cache import source_fingerprint
from depthcore.data.diw import load_image, parse_diw_csv
from depthcore.preflight import DIW_IMAGE_SAMPLE, check_diw_csv


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def _full_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(workdir: Path, gib: float) -> None:
    big = workdir / "big.mat"
    block = np.random.default_rng(0).integers(0, 256, size=1 << 26, dtype=np.uint8).tobytes()  # 64 MiB
    size = int(gib * (1 << 30))
    with open(big, "wb") as fh:
        for _ in range(size // len(block)):
            fh.write(block)
    sampled, _ = _timed(source_fingerprint, big)
    full, _ = _timed(_full_sha256, big)
    print(f"fingerprint of {gib:.1f} GiB (page cache warm): sampled {sampled * 1000:.0f} ms, "
          f"whole-file SHA-256 {full:.1f} s")
    big.unlink()


def diw(workdir: Path, pairs: int) -> None:
    root = workdir / "diw"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    # Smooth random images compress like photographs, unlike pure noise.
    originals = []
    for k in range(8):
        small = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
        path = root / f"src{k}.jpg"
        Image.fromarray(small).resize((640, 480), Image.Resampling.BICUBIC).save(path, quality=90)
        originals.append(path)
    lines = []
    for i in range(pairs):
        name = f"img/{i:07d}.jpg"
        os.link(originals[i % len(originals)], root / name)
        lines += [f"./{name}", "100,200,300,400,>,640,480"]
    csv = root / "DIW_train_val.csv"
    csv.write_text("\n".join(lines) + "\n")
    parse, parsed = _timed(parse_diw_csv, csv)
    stat, _ = _timed(lambda: [(root / p.image).is_file() for p in parsed])
    decodes = 64
    decode, _ = _timed(lambda: [load_image(root, parsed[i].image, "bench", None) for i in range(decodes)])
    check, _ = _timed(check_diw_csv, csv, root)
    per_decode = decode / decodes
    print(f"DIW CSV of {pairs} pairs: parse every line {parse:.2f} s, stat every image {stat:.2f} s "
          f"(page cache warm), decode one 640x480 JPEG {per_decode * 1000:.1f} ms; "
          f"check_diw_csv (parse + stat all + decode {DIW_IMAGE_SAMPLE}) {check:.2f} s; "
          f"decoding all {pairs} would take ~{per_decode * pairs:.0f} s, all of 421 k ~{per_decode * 421_000 / 60:.0f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.8)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="preflight_", dir=args.workdir))
    try:
        fingerprint(workdir, args.gib)
        diw(workdir, args.pairs)
    finally:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
