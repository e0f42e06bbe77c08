"""Bad data files of every kind a user meets, made from a generated dataset: shared by the
bad-input tables of depthcore's command lines and of the sweep's."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py


def make_bad_files(synthetic_root: dict[str, Path], base: Path) -> Path:
    """Write into ``base``: ``truncated.mat``, ``text.mat``, ``no_depths.mat``, ``no_images.mat``,
    ``split_garbage.mat``, ``a_file``, and a DIW folder (returned) with one good image
    (``img/ok.png``), a corrupt one, a text file named like an image, and CSVs: ``fields.csv``
    (line 4), ``integer.csv`` (7), ``ordinal.csv`` (4), ``missing_image.csv`` (3), ``corrupt.csv``
    (3), ``garbage.csv`` (1), ``binary.csv`` (2) and ``good.csv``."""
    mat = synthetic_root["nyu_mat"].read_bytes()
    (base / "truncated.mat").write_bytes(mat[: len(mat) // 2])
    (base / "text.mat").write_text("images, depths: this is not MATLAB\n")
    for missing in ("depths", "images"):
        shutil.copy(synthetic_root["nyu_mat"], base / f"no_{missing}.mat")
        with h5py.File(base / f"no_{missing}.mat", "r+") as f:
            del f[missing]
    (base / "split_garbage.mat").write_bytes(b"\x00\x01 not a MATLAB v5 file")
    good = synthetic_root["diw_train_csv"].read_text().splitlines()
    diw = base / "diw"
    (diw / "img").mkdir(parents=True)
    png = (synthetic_root["diw_root"] / good[0]).read_bytes()
    (diw / "img" / "ok.png").write_bytes(png)
    (diw / "img" / "corrupt.png").write_bytes(png[: len(png) // 2])
    (diw / "img" / "garbage.jpg").write_text("a text file with an image's name\n")
    csvs = {
        "fields.csv": good[:3] + ["1,2,3,>,10,10"] + good[4:8],  # line 4: six fields
        "integer.csv": good[:6] + ["1,2,x,4,>,10,10"] + good[7:8],  # line 7: not an integer
        "ordinal.csv": good[:2] + ["./img/ok.png", "1,2,3,4,=,10,10"],  # line 4: bad ordinal
        "missing_image.csv": ["./img/ok.png", good[1], "./img/nowhere.png", good[3]],  # line 3
        "corrupt.csv": ["./img/ok.png", good[1], "./img/corrupt.png", good[3]],
        "garbage.csv": ["./img/garbage.jpg", good[1]],
        "good.csv": ["./img/ok.png", good[1]],
    }
    for name, lines in csvs.items():
        (diw / name).write_text("\n".join(lines) + "\n")
    (diw / "binary.csv").write_bytes(b"./img/ok.png\n\xff\xfe\x00binary\n")
    (base / "a_file").write_text("a file where a folder should be\n")
    return diw
