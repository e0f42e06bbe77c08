"""A tiny vectorised ray caster for indoor rooms: RGB whose depth is learnable from appearance.

World axes: x right, y up, z forward (metres). A room is the box ``room_lo..room_hi`` with the
floor at y = 0; furniture is axis-aligned boxes. Every pixel casts one ray; depth is the
distance along the optical axis (like a Kinect), not along the ray.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

NOISE_GRID = 64
PATTERNS = ("wood", "tiles", "stripes", "dots", "plain")


@dataclass(frozen=True)
class Material:
    pattern: str
    color: np.ndarray  # (3,) linear albedo
    color2: np.ndarray  # (3,) second colour of the pattern
    scale: float  # pattern period in metres
    noise_amp: float  # strength of low-frequency value noise


@dataclass(frozen=True)
class Room:
    lo: np.ndarray  # (3,)
    hi: np.ndarray  # (3,)
    faces: tuple[Material, ...]  # x-, x+, floor, ceiling, z-, z+
    boxes_lo: np.ndarray  # (K, 3)
    boxes_hi: np.ndarray  # (K, 3)
    box_materials: tuple[Material, ...]
    light: np.ndarray  # (3,) point light position
    light_power: float
    ambient: float
    exposure: float
    noise: np.ndarray  # (NOISE_GRID, NOISE_GRID) lattice for value noise
    far_limit: float  # raw depth is missing beyond this range


@dataclass(frozen=True)
class Camera:
    position: np.ndarray  # (3,)
    yaw: float  # radians, + turns right
    pitch: float  # radians, + looks up
    fov_x: float  # radians


def _rot(yaw: float, pitch: float) -> np.ndarray:
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    r_yaw = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    r_pitch = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
    return r_yaw @ r_pitch


def value_noise(u: np.ndarray, v: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Smooth noise in [0, 1] at continuous lattice coordinates (u, v), periodic in the table."""
    g = table.shape[0]
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)  # smoothstep: no grid creases
    i0, j0 = iu.astype(np.int64) % g, iv.astype(np.int64) % g
    i1, j1 = (i0 + 1) % g, (j0 + 1) % g
    top = table[i0, j0] * (1 - fv) + table[i0, j1] * fv
    bottom = table[i1, j0] * (1 - fv) + table[i1, j1] * fv
    return top * (1 - fu) + bottom * fu


def _albedo(m: Material, u: np.ndarray, v: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(P, 3) albedo of material ``m`` at surface coordinates (u, v) in metres."""
    cu, cv = u / m.scale, v / m.scale
    mix = np.zeros_like(u)
    if m.pattern == "wood":
        plank = np.floor(cu)
        grain = value_noise(cu * 0.7 + 17.0, v * 6.0, table)
        mix = 0.45 * table[plank.astype(np.int64) % NOISE_GRID, 5] + 0.35 * grain
        joint = (cu - plank < 0.04) | ((v + 1.7 * plank) % 2.0 < 0.02)
        mix = np.where(joint, 1.2, mix)
    elif m.pattern == "tiles":
        iu, iv = np.floor(cu), np.floor(cv)
        checker = (iu + iv) % 2
        tone = 0.15 * table[iu.astype(np.int64) % NOISE_GRID, iv.astype(np.int64) % NOISE_GRID]
        grout = (cu - iu < 0.06) | (cv - iv < 0.06)
        mix = np.where(grout, 1.0, 0.6 * checker + tone)
    elif m.pattern == "stripes":
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * cu)
    elif m.pattern == "dots":
        du, dv = cu - np.round(cu), cv - np.round(cv)
        mix = (du * du + dv * dv < 0.06).astype(np.float64)
    albedo = m.color[None] * (1 - mix[:, None]) + m.color2[None] * mix[:, None]
    blotch = value_noise(u * 1.3 + 5.0, v * 1.3 + 9.0, table) - 0.5
    return albedo * (1.0 + m.noise_amp * blotch)[:, None]


def _slabs(o: np.ndarray, inv: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray / box slab test: entry distance, exit distance and entry axis per ray.

    ``o`` is (3,) or (3, P), ``inv`` (3, P): one row per axis, which keeps every operation
    on long contiguous arrays (reductions over a length-3 axis are slow in numpy).
    """

    def bounds(a: int) -> tuple[np.ndarray, np.ndarray]:
        t1, t2 = (lo[a] - o[a]) * inv[a], (hi[a] - o[a]) * inv[a]
        return np.minimum(t1, t2), np.maximum(t1, t2)

    t_in, t_out = bounds(0)
    entry = np.zeros(t_in.shape, dtype=np.int64)
    for a in (1, 2):
        near, far = bounds(a)
        entry = np.where(near > t_in, a, entry)
        t_in, t_out = np.maximum(t_in, near), np.minimum(t_out, far)
    return t_in, t_out, entry


def _safe_inverse(d: np.ndarray) -> np.ndarray:
    d = np.where(np.abs(d) < 1e-12, np.where(d < 0, -1e-12, 1e-12), d)
    return 1.0 / d


def _pick(rows: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Per ray, the component ``axis`` of a (3, P) array."""
    return np.choose(axis, rows)


def render(
    room: Room, cam: Camera, height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast one view: (rgb uint8 (H, W, 3), z-depth float32 (H, W) metres, surface id (H, W))."""
    f = 0.5 * width / np.tan(0.5 * cam.fov_x)
    u = (np.arange(width) + 0.5 - 0.5 * width) / f
    v = (np.arange(height) + 0.5 - 0.5 * height) / f
    d_cam = np.stack([np.broadcast_to(c, (height, width)).ravel() for c in (u[None, :], -v[:, None], 1.0)])
    # Camera-frame z is 1 for every ray, so the ray parameter t is the optical-axis depth.
    d = _rot(cam.yaw, cam.pitch) @ d_cam  # (3, P)
    o = cam.position
    inv = _safe_inverse(d)

    # Room interior: the ray leaves through the nearest face in its direction.
    t_faces = np.where(d > 0, (room.hi - o)[:, None] * inv, (room.lo - o)[:, None] * inv)  # (3, P)
    axis = np.where(t_faces[1] < t_faces[0], 1, 0)
    axis = np.where(t_faces[2] < _pick(t_faces, axis), 2, axis)
    t = _pick(t_faces, axis)
    surface = 2 * axis + (_pick(d, axis) > 0)
    for k in range(len(room.boxes_lo)):
        t_in, t_out, box_axis = _slabs(o, inv, room.boxes_lo[k], room.boxes_hi[k])
        hit = (t_in <= t_out) & (t_in > 1e-4) & (t_in < t)
        t = np.where(hit, t_in, t)
        axis = np.where(hit, box_axis, axis)
        surface = np.where(hit, 6 + k, surface)

    point = o[:, None] + t * d  # (3, P)
    normal = np.zeros_like(d)
    for a in range(3):  # the normal faces the camera
        normal[a] = np.where(axis == a, -np.sign(d[a]), 0.0)
    # Surface coordinates: the two world axes lying in the hit plane.
    su = np.where(axis == 0, point[2], point[0])
    sv = np.where(axis == 1, point[2], point[1])

    albedo = np.empty((d.shape[1], 3))
    materials = room.faces + room.box_materials
    for s, material in enumerate(materials):
        sel = surface == s
        if sel.any():
            albedo[sel] = _albedo(material, su[sel], sv[sel], room.noise)

    to_light = room.light[:, None] - point  # (3, P)
    dist = np.sqrt((to_light * to_light).sum(0))
    lambert = np.clip((normal * to_light).sum(0) / dist, 0.0, None)
    # Shadow rays towards the light against the furniture (room walls cannot occlude it).
    start = point + 1e-3 * normal
    inv_l = _safe_inverse(to_light)
    lit = np.ones(d.shape[1], dtype=bool)
    for k in range(len(room.boxes_lo)):
        t_in, t_out, _ = _slabs(start, inv_l, room.boxes_lo[k], room.boxes_hi[k])
        lit &= ~((t_in <= t_out) & (t_out > 0) & (t_in < 1.0))
    shading = room.ambient + room.light_power * lambert * lit / (1.0 + 0.3 * dist**2)
    fog = np.exp(-0.05 * t)[:, None]  # far surfaces grow dimmer and hazier
    radiance = albedo * shading[:, None] * fog + 0.03 * (1 - fog)
    rgb = 1.0 - np.exp(-room.exposure * radiance)  # soft tone map: no hard clipping
    rgb = rgb ** (1 / 2.2) + rng.normal(0.0, 0.01, rgb.shape)
    image = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).reshape(height, width, 3)
    return image, t.reshape(height, width).astype(np.float32), surface.reshape(height, width)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(radius):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def kinect_raw(depth: np.ndarray, far_limit: float, rng: np.random.Generator) -> np.ndarray:
    """Raw-sensor-like depth from exact depth: noise, mm quantisation and 0-valued holes.

    Holes: beyond range (too near or too far), along depth discontinuities (plus the
    projector's shadow to their left), and a few random blobs (dark or shiny spots).
    """
    h, w = depth.shape
    holes = (depth < 0.45) | (depth > far_limit)
    jump = np.zeros_like(holes)
    rel_x = np.abs(np.diff(depth, axis=1)) / depth[:, 1:] > 0.06
    rel_y = np.abs(np.diff(depth, axis=0)) / depth[1:] > 0.06
    jump[:, 1:] |= rel_x
    jump[1:] |= rel_y
    radius = max(1, w // 160)
    jump = _dilate(jump, radius)
    shadow = np.zeros_like(jump)
    shift = max(2, w // 60)
    shadow[:, :-shift] = jump[:, shift:]
    holes |= jump | shadow
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.poisson(1.5)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.02, 0.08, 2) * w
        holes |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
    raw = depth + rng.normal(0.0, 1.0, depth.shape) * 1.2e-3 * depth**2
    raw = np.round(raw, 3).astype(np.float32)
    raw[holes] = 0.0
    return raw


def jitter_camera(cam: Camera, rng: np.random.Generator) -> Camera:
    """A near-duplicate view: the camera drifts a few centimetres and degrees."""
    return replace(
        cam,
        position=cam.position + rng.normal(0.0, [0.08, 0.03, 0.08]),
        yaw=cam.yaw + rng.normal(0.0, np.radians(4.0)),
        pitch=cam.pitch + rng.normal(0.0, np.radians(2.0)),
    )
