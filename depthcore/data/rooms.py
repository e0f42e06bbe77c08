"""Random indoor rooms (NYU-like scene types) and camera placements for :mod:`render`."""

from __future__ import annotations

import numpy as np

from depthcore.data.render import NOISE_GRID, Camera, Material, Room

SCENE_TYPES = ("bedroom", "kitchen", "living_room", "bathroom", "office", "dining_room")
# Per scene type: floor patterns, wall patterns, furniture kinds to draw from.
_STYLE = {
    "bedroom": (("wood", "plain"), ("plain", "stripes", "dots"), ("bed", "cube", "tall", "cube")),
    "kitchen": (("tiles",), ("tiles", "plain"), ("counter", "wall_cabinet", "table", "cube")),
    "living_room": (("wood", "plain"), ("plain", "stripes"), ("sofa", "table", "tall", "cube")),
    "bathroom": (("tiles",), ("tiles",), ("counter", "cube", "tall")),
    "office": (("plain", "tiles"), ("plain",), ("table", "tall", "cube", "cube")),
    "dining_room": (("wood", "tiles"), ("stripes", "dots", "plain"), ("table", "cube", "cube", "tall")),
}
CAMERA_MAX_Z = 1.0  # furniture starts beyond this so jittered cameras never end up inside it
FURNITURE_MIN_Z = 1.5


def _color(rng: np.random.Generator, lo: float, hi: float, tint: float = 0.25) -> np.ndarray:
    base = rng.uniform(lo, hi)
    return np.clip(base * (1.0 + rng.uniform(-tint, tint, 3)), 0.02, 0.95)


def _material(rng: np.random.Generator, pattern: str, lo: float, hi: float) -> Material:
    color = _color(rng, lo, hi)
    contrast = rng.uniform(0.55, 0.85) if pattern in ("wood", "tiles") else rng.uniform(0.7, 1.3)
    scale = {"wood": 0.18, "tiles": 0.3, "stripes": 0.25, "dots": 0.2, "plain": 1.0}[pattern]
    return Material(
        pattern=pattern,
        color=color,
        color2=np.clip(color * contrast, 0.02, 0.95),
        scale=scale * rng.uniform(0.7, 1.4),
        noise_amp=rng.uniform(0.1, 0.35),
    )


def _furniture(
    rng: np.random.Generator, kind: str, lo: np.ndarray, hi: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Boxes (lo, hi) of one piece of furniture standing in the room ``lo..hi``."""
    width, depth = hi[0] - lo[0], hi[2] - lo[2]
    size = {
        "bed": (rng.uniform(1.4, 2.0), rng.uniform(0.45, 0.6), rng.uniform(1.9, 2.1)),
        "sofa": (rng.uniform(1.6, 2.4), rng.uniform(0.4, 0.5), rng.uniform(0.8, 1.0)),
        "cube": (rng.uniform(0.4, 0.9), rng.uniform(0.4, 0.9), rng.uniform(0.4, 0.7)),
        "tall": (rng.uniform(0.6, 1.2), rng.uniform(1.6, 2.1), rng.uniform(0.35, 0.6)),
        "counter": (rng.uniform(1.5, min(3.0, depth - FURNITURE_MIN_Z)), 0.9, 0.6),
        "wall_cabinet": (rng.uniform(1.0, 2.0), rng.uniform(0.5, 0.7), 0.35),
        "table": (rng.uniform(0.8, 1.6), rng.uniform(0.7, 0.78), rng.uniform(0.7, 1.0)),
    }[kind]
    sx, sy, sz = size
    against_wall = kind in ("tall", "counter", "wall_cabinet") or rng.random() < 0.4
    if against_wall and kind != "bed" and rng.random() < 0.5:
        # Along a side wall: the long side runs along z.
        sx, sz = min(sz, width), min(sx, depth - FURNITURE_MIN_Z)
        x0 = lo[0] if rng.random() < 0.5 else hi[0] - sx
        z0 = rng.uniform(FURNITURE_MIN_Z, max(FURNITURE_MIN_Z, hi[2] - sz))
    elif against_wall:  # against the far wall
        sx, sz = min(sx, width), min(sz, depth - FURNITURE_MIN_Z)
        x0 = rng.uniform(lo[0], max(lo[0], hi[0] - sx))
        z0 = hi[2] - sz
    else:  # free-standing
        sx, sz = min(sx, width), min(sz, depth - FURNITURE_MIN_Z)
        x0 = rng.uniform(lo[0] + 0.2, max(lo[0] + 0.2, hi[0] - sx - 0.2))
        z0 = rng.uniform(FURNITURE_MIN_Z + 0.5, max(FURNITURE_MIN_Z + 0.5, hi[2] - sz - 0.5))
    y0 = 1.45 if kind == "wall_cabinet" else 0.0
    box_lo, box_hi = np.array([x0, y0, z0]), np.array([x0 + sx, y0 + sy, z0 + sz])
    if kind == "sofa":  # seat plus backrest
        back = (np.array([x0, 0.0, z0 + sz - 0.2]), np.array([x0 + sx, sy + 0.45, z0 + sz]))
        return [(box_lo, box_hi), back]
    if kind == "table":  # top plus four legs
        top = (np.array([x0, sy - 0.05, z0]), box_hi)
        legs = [
            (np.array([x, 0.0, z]), np.array([x + 0.06, sy - 0.05, z + 0.06]))
            for x in (x0 + 0.03, x0 + sx - 0.09)
            for z in (z0 + 0.03, z0 + sz - 0.09)
        ]
        return [top, *legs]
    return [(box_lo, box_hi)]


def sample_room(rng: np.random.Generator, scene_type: str) -> Room:
    """A random room of ``scene_type`` with furniture, materials and one ceiling light."""
    floors, walls, kinds = _STYLE[scene_type]
    small = scene_type == "bathroom"
    width = rng.uniform(2.4, 3.5) if small else rng.uniform(3.0, 6.0)
    depth = rng.uniform(3.5, 5.0) if small else rng.uniform(4.5, 8.5)
    height = rng.uniform(2.4, 3.1)
    lo, hi = np.array([-width / 2, 0.0, 0.0]), np.array([width / 2, height, depth])
    wall_pattern = walls[rng.integers(len(walls))]
    wall = _material(rng, wall_pattern, 0.35, 0.8)
    accent = _material(rng, walls[rng.integers(len(walls))], 0.25, 0.75)
    faces = (
        wall,
        accent if rng.random() < 0.3 else wall,
        _material(rng, floors[rng.integers(len(floors))], 0.12, 0.5),
        _material(rng, "plain", 0.7, 0.9),
        wall,
        accent if rng.random() < 0.5 else wall,
    )
    boxes: list[tuple[np.ndarray, np.ndarray]] = []
    box_materials: list[Material] = []
    for _ in range(rng.integers(2, 5)):
        kind = kinds[rng.integers(len(kinds))]
        pattern = "wood" if rng.random() < 0.4 else "plain"
        material = _material(rng, pattern, 0.08, 0.7)
        for box in _furniture(rng, kind, lo, hi):
            boxes.append(box)
            box_materials.append(material)
    return Room(
        lo=lo,
        hi=hi,
        faces=faces,
        boxes_lo=np.array([b[0] for b in boxes]).reshape(-1, 3),
        boxes_hi=np.array([b[1] for b in boxes]).reshape(-1, 3),
        box_materials=tuple(box_materials),
        light=np.array([rng.uniform(lo[0] + 0.5, hi[0] - 0.5), height - 0.05, rng.uniform(1.0, depth * 0.6)]),
        light_power=rng.uniform(2.0, 4.0),
        ambient=rng.uniform(0.12, 0.3),
        exposure=rng.uniform(1.6, 2.6),
        noise=rng.random((NOISE_GRID, NOISE_GRID)),
        far_limit=rng.uniform(6.5, 9.5),
    )


def sample_camera(rng: np.random.Generator, room: Room, fov_x: float | None = None) -> Camera:
    """A standing-height camera near the entrance wall, looking into the room."""
    half = 0.25 * (room.hi[0] - room.lo[0])
    return Camera(
        position=np.array([rng.uniform(-half, half), rng.uniform(1.1, 1.7), rng.uniform(0.3, CAMERA_MAX_Z - 0.2)]),
        yaw=np.radians(rng.uniform(-30.0, 30.0)),
        pitch=np.radians(rng.uniform(-20.0, 0.0)),
        fov_x=np.radians(58.0) if fov_x is None else fov_x,
    )
