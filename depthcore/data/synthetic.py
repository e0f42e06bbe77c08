"""Synthetic stand-ins for NYU Depth V2 and DIW, written in the real file formats.

Rendered indoor rooms (see :mod:`render`) give images whose depth can be learned from
appearance, so the whole pipeline (loader, cache, training, both evaluations) can run and be
tested without the 2.8 GB download. Deterministic by seed. DIW-style pairs are drawn so that
the rule "the upper point is farther" scores 50 % on them (:mod:`depthcore.data.pairs`).

The generator writes ``synthetic.json`` (its ``GENERATOR_VERSION`` and arguments) last; a folder
without it, or made by another version or with other arguments, is not current
(:func:`synthetic_is_current`) and is regenerated rather than reused.

    python -m depthcore.data.synthetic --out DIR [--frames N] [--height H] [--width W] [--seed S]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from depthcore.data.matfile import create_numeric, create_v73, write_cellstr, write_v73_header
from depthcore.data.pairs import draw_pair
from depthcore.data.render import jitter_camera, kinect_raw, render
from depthcore.data.rooms import SCENE_TYPES, sample_camera, sample_room
from depthcore.data.splits import carve_val_by_scene

NYU_NAME = "nyu_depth_v2_labeled.mat"
SPLIT_NAME = "splits.mat"
MANIFEST_NAME = "synthetic.json"
TEST_FRACTION = 0.45  # the official split has 654 / 1449 test frames
GENERATOR_VERSION = 2
"""Raised whenever the generator's output changes (2: pairs drawn against the vertical rule)."""


class _Progress:
    """Prints ``synthetic: <what> k/n`` to stderr about every 10 %."""

    def __init__(self, what: str, total: int, enabled: bool) -> None:
        self.what, self.total, self.enabled = what, total, enabled
        self.step, self.next = max(1, total // 10), max(1, total // 10)

    def update(self, done: int) -> None:
        if self.enabled and (done >= self.next or done == self.total):
            print(f"synthetic: {self.what} {done}/{self.total}", file=sys.stderr, flush=True)
            self.next = done + self.step


def _scene_plan(num_frames: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    """(scene type, frame count) per scene; at least two scenes so a split by scene exists."""
    cap = max(1, num_frames // 2)
    plan: list[tuple[str, int]] = []
    left = num_frames
    while left:
        count = min(int(rng.integers(3, 9)), left, cap)
        plan.append((SCENE_TYPES[rng.integers(len(SCENE_TYPES))], count))
        left -= count
    return plan


def write_nyu_mat(path: Path, num_frames: int, height: int, width: int, seed: int, progress: bool) -> list[str]:
    """Render frames into a MATLAB v7.3 file laid out like ``nyu_depth_v2_labeled.mat``."""
    plan = _scene_plan(num_frames, np.random.default_rng([seed, 0]))
    scenes: list[str] = []
    scene_types: list[str] = []
    counters = {t: 0 for t in SCENE_TYPES}
    report = _Progress("nyu frames", num_frames, progress)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with create_v73(tmp) as f:
        # MATLAB is column-major: (H, W) images arrive as (W, H), frames first.
        images = create_numeric(f, "images", (num_frames, 3, width, height), np.uint8, "uint8")
        depths = create_numeric(f, "depths", (num_frames, width, height), np.float32, "single")
        raws = create_numeric(f, "rawDepths", (num_frames, width, height), np.float32, "single")
        frame = 0
        for k, (scene_type, count) in enumerate(plan):
            rng = np.random.default_rng([seed, 1, k])
            room = sample_room(rng, scene_type)
            camera = sample_camera(rng, room)
            counters[scene_type] += 1
            name = f"{scene_type}_{counters[scene_type]:04d}"
            for _ in range(count):
                # Consecutive frames of one scene are near-duplicates, as in the real data.
                camera = jitter_camera(camera, rng)
                rgb, depth, _ = render(room, camera, height, width, rng)
                raw = kinect_raw(depth, room.far_limit, rng)
                images[frame] = rgb.transpose(2, 1, 0)  # (H, W, 3) -> (3, W, H)
                depths[frame] = depth.T
                raws[frame] = raw.T
                scenes.append(name)
                scene_types.append(scene_type)
                frame += 1
                report.update(frame)
        write_cellstr(f, "scenes", scenes)
        write_cellstr(f, "sceneTypes", scene_types)
    write_v73_header(tmp)
    os.replace(tmp, path)
    return scenes


def write_split(path: Path, scenes: list[str], seed: int) -> None:
    """MATLAB v5 ``trainNdxs`` / ``testNdxs`` (1-based uint16 columns), split by whole scenes."""
    # The same scene-level carve that makes val out of train makes test out of all frames here.
    train, test = carve_val_by_scene(np.arange(len(scenes)), scenes, TEST_FRACTION, seed)
    scipy.io.savemat(
        str(path),
        {
            "trainNdxs": (train + 1).astype(np.uint16).reshape(-1, 1),
            "testNdxs": (test + 1).astype(np.uint16).reshape(-1, 1),
        },
    )


def write_diw(root: Path, name: str, count: int, seed: int, stream: int, progress: bool) -> Path:
    """Render ``count`` images of varying size and a DIW-format CSV for them."""
    folder = root / "images" / name
    folder.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    report = _Progress(f"diw {name} images", count, progress)
    for i in range(count):
        rng = np.random.default_rng([seed, stream, i])
        width = int(rng.integers(120, 201))
        height = int(round(width * rng.uniform(0.6, 1.0)))
        room = sample_room(rng, SCENE_TYPES[rng.integers(len(SCENE_TYPES))])
        camera = sample_camera(rng, room, fov_x=np.radians(rng.uniform(50.0, 75.0)))
        rgb, depth, _ = render(room, camera, height, width, rng)
        relative = f"./images/{name}/{i:05d}.png"
        Image.fromarray(rgb).save(root / relative)
        y_a, x_a, y_b, x_b = draw_pair(depth, i, rng)
        ordinal = ">" if i % 2 == 0 else "<"
        lines += [relative, f"{y_a + 1},{x_a + 1},{y_b + 1},{x_b + 1},{ordinal},{width},{height}"]
        report.update(i + 1)
    csv = root / f"DIW_{name}.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def synthetic_paths(out_dir: str | os.PathLike) -> dict[str, Path]:
    """Where ``generate_synthetic(out_dir)`` puts each file, by ``data`` config key."""
    out = Path(out_dir)
    diw = out / "diw"
    return {"nyu_path": out / NYU_NAME, "split_file": out / SPLIT_NAME, "diw_root": diw,
            "diw_train_csv": diw / "DIW_train_val.csv", "diw_test_csv": diw / "DIW_test.csv"}


def _manifest(**arguments: int) -> dict[str, object]:
    return {"generator_version": GENERATOR_VERSION, "arguments": arguments}


def synthetic_is_current(out_dir: str | os.PathLike, **arguments: int) -> bool:
    """Whether ``out_dir`` holds a complete dataset of this generator version made with ``arguments``
    (the keyword arguments of :func:`generate_synthetic`; unset ones take its defaults)."""
    manifest = Path(out_dir) / MANIFEST_NAME
    try:
        found = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    defaults = {name: p.default for name, p in inspect.signature(generate_synthetic).parameters.items()
                if name not in ("out_dir", "progress")}
    expected = _manifest(**{**defaults, **arguments})
    return found == expected and all(p.exists() for p in synthetic_paths(out_dir).values())


def generate_synthetic(
    out_dir: str | os.PathLike,
    num_frames: int = 300,
    height: int = 120,
    width: int = 160,
    diw_train: int = 400,
    diw_test: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Path]:
    """Write a synthetic NYU ``.mat`` + split file and a DIW folder; return their paths.

    Keys: ``nyu_mat``, ``split_file``, ``diw_root``, ``diw_train_csv``, ``diw_test_csv``.
    """
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2 (train and test need a scene each), found {num_frames}")
    if height < 8 or width < 8:
        raise ValueError(f"height and width must be >= 8, found {height}x{width}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # written again only once everything is
    nyu = out / NYU_NAME
    scenes = write_nyu_mat(nyu, num_frames, height, width, seed, progress)
    split = out / SPLIT_NAME
    write_split(split, scenes, seed)
    diw_root = synthetic_paths(out)["diw_root"]
    written = {
        "nyu_mat": nyu,
        "split_file": split,
        "diw_root": diw_root,
        "diw_train_csv": write_diw(diw_root, "train_val", diw_train, seed, stream=4, progress=progress),
        "diw_test_csv": write_diw(diw_root, "test", diw_test, seed, stream=5, progress=progress),
    }
    arguments = {"num_frames": num_frames, "height": height, "width": width, "diw_train": diw_train,
                 "diw_test": diw_test, "seed": seed}
    (out / MANIFEST_NAME).write_text(json.dumps(_manifest(**arguments), indent=2) + "\n")
    return written



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m depthcore.data.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--frames", type=int, default=300, help="NYU-like frames")
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--diw-train", type=int, default=400, help="DIW train_val images")
    parser.add_argument("--diw-test", type=int, default=100, help="DIW test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--keep-current", action="store_true",
                        help="do nothing when --out already holds this generator version's dataset with these settings")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    settings = {"num_frames": args.frames, "height": args.height, "width": args.width, "diw_train": args.diw_train,
                "diw_test": args.diw_test, "seed": args.seed}
    if args.keep_current and synthetic_is_current(args.out, **settings):
        print(f"{args.out}: current (generator version {GENERATOR_VERSION}, same settings); kept")
        return 0
    try:
        paths = generate_synthetic(
            args.out,
            args.frames,
            args.height,
            args.width,
            args.diw_train,
            args.diw_test,
            args.seed,
            progress=not args.quiet,
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for key, path in paths.items():
        print(f"{key}: {path}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
