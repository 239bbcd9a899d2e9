"""Synthetic KITTI-format LiDAR scenes, ray-cast with open3d's ``RaycastingScene``.

Each frame: a ground plane, Cars / Pedestrians / Cyclists built from a few primitives (car body +
cabin + wheels; pedestrian legs + torso + head; bicycle frame + wheels + rider) at random poses
inside the camera's field of view, unlabelled clutter anywhere (building walls, poles, trees,
bushes, barriers) that occludes them, and a 64-beam spinning sensor with KITTI's HDL-64E
vertical field of view (+2 deg ... -24.8 deg), mounted 1.73 m above the ground, with Gaussian
range noise, random ray drop-out and an intensity model (albedo x incidence cosine x range
fall-off + noise).

Labels are exact: the box that the object's primitives were placed in. The KITTI fields are
derived like the real annotations' semantics: 2D box and truncation from projecting the box with
the (synthetic) P2, occlusion from the fraction of rays towards the object's parts that reach it
first (>= 0.8 -> 0, >= 0.4 -> 1, > 0 -> 2, no ray reaches it -> 3 "unknown", which the KITTI
rules ignore at every difficulty). Output is deterministic for a given seed and frame index.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._open3d import o3d
from .boxes import Calibration, points_in_boxes
from .io import KittiObjects, write_bin, write_calib, write_label
from .iou import bev_iou_numba

__all__ = ["SynthConfig", "synth_calibration", "generate_frame", "write_dataset"]

# Class size priors (mean, std) for (length, width, height), roughly KITTI's statistics.
SIZE_PRIORS = {
    "Car": ((3.9, 1.6, 1.56), (0.35, 0.1, 0.12)),
    "Pedestrian": ((0.8, 0.62, 1.75), (0.15, 0.08, 0.1)),
    "Cyclist": ((1.76, 0.6, 1.74), (0.15, 0.06, 0.08)),
}


@dataclass
class SynthConfig:
    """Scene and sensor parameters (all lengths in metres, angles in degrees)."""

    n_beams: int = 64
    fov_up: float = 2.0
    fov_down: float = -24.8
    azimuth_res: float | None = None  # deg; None: 0.2 (version 1) / 0.09 (version 2, like KITTI's scans)
    sensor_height: float = 1.73
    max_range: float = 100.0
    range_noise: float = 0.02
    drop_prob: float = 0.05
    image_shape: tuple[int, int] = (375, 1242)
    n_cars: tuple[int, int] = (2, 8)
    n_pedestrians: tuple[int, int] = (1, 4)
    n_cyclists: tuple[int, int] = (1, 3)
    n_clutter: tuple[int, int] = (6, 16)
    object_range: tuple[float, float] = (4.0, 52.0)
    camera_half_fov: float = 38.0
    max_abs_y: float = 26.0
    version: int = 2  # scene model: 1 = the original primitives world, 2 = closer to real scans
    beam_elev_jitter: float = 0.03  # deg, per-laser elevation offset (version 2)
    extra: dict = field(default_factory=dict)


def synth_calibration() -> Calibration:
    """A KITTI-like calibration: camera 0.27 m behind and 0.08 m below the LiDAR, f = 720 px."""
    p2 = np.array([[720.0, 0.0, 621.0, 0.0], [0.0, 720.0, 187.5, 0.0], [0.0, 0.0, 1.0, 0.0]])
    v2c = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27]])
    return Calibration(p2, np.eye(3), v2c)


# ------------------------------------------------------------------------------ mesh helpers
class _Templates:
    def __init__(self):
        g = o3d().t.geometry.TriangleMesh
        box = g.create_box(1.0, 1.0, 1.0)
        self.box = (box.vertex.positions.numpy() - 0.5, box.triangle.indices.numpy())  # unit, centred
        cyl = g.create_cylinder(1.0, 1.0, 12, 1)  # axis z, radius 1, height 1, centred
        self.cyl = (cyl.vertex.positions.numpy(), cyl.triangle.indices.numpy())
        sph = g.create_sphere(1.0, 8)
        self.sph = (sph.vertex.positions.numpy(), sph.triangle.indices.numpy())


_TEMPLATES: _Templates | None = None


def _templates() -> _Templates:
    global _TEMPLATES
    if _TEMPLATES is None:
        _TEMPLATES = _Templates()
    return _TEMPLATES


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass
class _Part:
    kind: str  # "box" | "cyl" | "sph" | "cylx" (cylinder lying along the local y axis: a wheel)
    centre: np.ndarray  # local frame of the object (x forward, y left, z up from the ground)
    size: np.ndarray  # box: (l, w, h); cyl: (r, r, h); sph: (r, r, r)


def _part_mesh(part: _Part, origin: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    t = _templates()
    if part.kind == "box":
        v, f = t.box
        v = v * part.size
    elif part.kind in ("cyl", "cylx"):
        v, f = t.cyl
        v = v * np.array([part.size[0], part.size[0], part.size[2]])
        if part.kind == "cylx":  # wheel: axis along local y
            v = v[:, [0, 2, 1]]
    else:
        v, f = t.sph
        v = v * part.size[0]
    rot = _rot_z(yaw)
    v = (v + part.centre) @ rot.T + origin
    return v.astype(np.float32), f.astype(np.uint32)


def _object_parts(cls: str, ln: float, w: float, h: float, rng) -> list[_Part]:
    P = lambda kind, c, s: _Part(kind, np.asarray(c, float), np.asarray(s, float))  # noqa: E731
    if cls == "Car":
        wr = min(0.33, 0.22 * h)
        body_h = 0.55 * h - 0.15
        parts = [
            P("box", (0, 0, 0.15 + body_h / 2 + 0.05), (ln, w, body_h)),
            P("box", (-0.08 * ln, 0, 0.55 * h + 0.225 * h), (0.52 * ln, 0.86 * w, 0.45 * h)),
        ]
        for sx in (0.32, -0.32):
            for sy in (0.5, -0.5):
                parts.append(P("cylx", (sx * ln, sy * (w - 0.2), wr), (wr, wr, 0.2)))
        return parts
    if cls == "Pedestrian":
        leg_h = 0.47 * h
        parts = [
            P("box", (0, 0.13 * w, leg_h / 2), (0.35 * ln, 0.22 * w, leg_h)),
            P("box", (0.05 * ln * rng.uniform(-1, 1), -0.13 * w, leg_h / 2), (0.35 * ln, 0.22 * w, leg_h)),
            P("box", (0, 0, leg_h + 0.19 * h), (0.45 * ln, 0.75 * w, 0.38 * h)),
            P("sph", (0, 0, h - 0.075 * h), (0.075 * h, 0.075 * h, 0.075 * h)),
        ]
        return parts
    if cls == "Cyclist":
        wr = 0.33
        parts = [
            P("cylx", (0.5 * ln - wr, 0, wr), (wr, wr, 0.06)),
            P("cylx", (-0.5 * ln + wr, 0, wr), (wr, wr, 0.06)),
            P("box", (0, 0, 0.62), (0.6 * ln, 0.08, 0.3)),
            P("box", (-0.05 * ln, 0, 0.62 + 0.3 * h / 2 + 0.15), (0.3 * ln, 0.7 * w, 0.38 * h)),
            P("sph", (0.0, 0, h - 0.07 * h), (0.07 * h, 0.07 * h, 0.07 * h)),
        ]
        return parts
    raise ValueError(cls)


def _sample_part_points(part: _Part, origin, yaw, n_side: int = 2) -> np.ndarray:
    """Points inside a part (for occlusion rays): centre plus a small interior grid."""
    half = part.size.copy() / 2 if part.kind == "box" else np.array([part.size[0]] * 3) * 0.5
    if part.kind == "cylx":
        half = np.array([part.size[0] * 0.5, part.size[2] * 0.4, part.size[0] * 0.5])
    g = np.linspace(-0.5, 0.5, n_side)
    grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3) * half
    local = np.concatenate([np.zeros((1, 3)), grid], 0) + part.centre
    return local @ _rot_z(yaw).T + origin


# ------------------------------------------------------------------------------------- scene
class _Footprints:
    """Occupied BEV rectangles; a candidate is rejected when it intersects any of them."""

    def __init__(self):
        self.boxes = np.zeros((0, 7))

    def try_add(self, x, y, length, w, yaw, margin) -> bool:
        cand = np.array([[x, y, 0.0, length + 2 * margin, w + 2 * margin, 1.0, yaw]])
        if len(self.boxes) and (bev_iou_numba(cand, self.boxes) > 0).any():
            return False
        self.boxes = np.concatenate([self.boxes, cand])
        return True


def generate_frame(cfg: SynthConfig, seed: int, index: int, calib: Calibration | None = None,
                   return_owner: bool = False):
    """One synthetic frame -> (points (N, 4) float32, KittiObjects, LiDAR boxes (M, 7), names (M,)).

    With ``return_owner`` a fifth item maps each point to the index (in the returned boxes) of the
    labelled object its ray hit, -1 for background. ``cfg.version`` selects the scene model: 1 is
    the original boxes-and-primitives world (kept bit-identical so its datasets can be regenerated),
    2 (default) the one closer to real HDL-64E scans (module docstring).
    """
    rng = np.random.default_rng([int(seed), int(index)])
    calib = calib or synth_calibration()
    if cfg.version == 1:
        meshes, objects = _scene_v1(cfg, rng)
    elif cfg.version == 2:
        meshes, objects = _scene_v2(cfg, rng)
    else:
        raise ValueError(f"unknown synthetic scene version {cfg.version} (1 or 2)")
    return _scan_and_label(cfg, rng, meshes, objects, calib, return_owner)


def _scene_v1(cfg: SynthConfig, rng):
    ground_z = -cfg.sensor_height + rng.normal(0, 0.03)
    meshes = []  # (vertices, triangles, albedo, owner object index or -1)
    occupied = _Footprints()
    P = lambda kind_, c, s: _Part(kind_, np.asarray(c, float), np.asarray(s, float))  # noqa: E731

    def add_static(parts, origin, yaw, albedo):
        for p in parts:
            v, f = _part_mesh(p, origin, yaw)
            meshes.append((v, f, albedo, -1))

    size = 160.0
    gv = np.array([[-size, -size, ground_z], [size, -size, ground_z], [size, size, ground_z], [-size, size, ground_z]],
                  dtype=np.float32)
    meshes.append((gv, np.array([[0, 1, 2], [0, 2, 3]], dtype=np.uint32), rng.uniform(0.08, 0.2), -1))

    # ---- road-side building rows / hedges (unlabelled), placed first
    road_yaw = rng.normal(0, 0.08)
    corridor = {1.0: cfg.max_abs_y, -1.0: cfg.max_abs_y}  # free half-width left / right of the road
    for side in (1.0, -1.0):
        if rng.random() > cfg.extra.get("p_building_row", 0.6):
            continue
        offset = rng.uniform(8.0, 16.0)
        corridor[side] = offset
        x = rng.uniform(-60.0, -40.0)
        while x < 80.0:
            seg = rng.uniform(4.0, 15.0)
            depth = rng.uniform(0.5, 6.0)
            height = rng.uniform(1.0, 9.0)
            cx = x + seg / 2
            cy = side * (offset + depth / 2)
            px = cx * np.cos(road_yaw) - cy * np.sin(road_yaw)
            py = cx * np.sin(road_yaw) + cy * np.cos(road_yaw)
            if occupied.try_add(px, py, seg, depth, road_yaw, 0.2):
                add_static([P("box", (0, 0, height / 2), (seg, depth, height))], np.array([px, py, ground_z]),
                           road_yaw, rng.uniform(0.1, 0.7))
            x += seg + rng.uniform(0.0, 6.0)

    # ---- labelled objects, placed inside the camera's horizontal field of view
    objects = []  # (cls, box7, parts, yaw, origin)
    counts = {
        "Car": rng.integers(cfg.n_cars[0], cfg.n_cars[1] + 1),
        "Pedestrian": rng.integers(cfg.n_pedestrians[0], cfg.n_pedestrians[1] + 1),
        "Cyclist": rng.integers(cfg.n_cyclists[0], cfg.n_cyclists[1] + 1),
    }
    half_fov = np.deg2rad(cfg.camera_half_fov)
    for cls, n in counts.items():
        mean, std = SIZE_PRIORS[cls]
        for _ in range(int(n)):
            for _attempt in range(30):
                r = rng.uniform(*cfg.object_range) if cls == "Car" else rng.uniform(cfg.object_range[0], 40.0)
                az = rng.uniform(-half_fov, half_fov)
                x, y = r * np.cos(az), r * np.sin(az)
                # lateral offset from the road axis must stay inside the corridor
                lat = -x * np.sin(road_yaw) + y * np.cos(road_yaw)
                if abs(y) > cfg.max_abs_y or abs(lat) > corridor[1.0 if lat >= 0 else -1.0] - 1.0:
                    continue
                ln, w, h = np.maximum(rng.normal(mean, std), np.asarray(mean) * 0.6)
                if cls == "Car":
                    yaw = road_yaw + rng.choice([0.0, np.pi, np.pi / 2, -np.pi / 2], p=[0.4, 0.4, 0.1, 0.1])
                    yaw += rng.normal(0, 0.2)
                else:
                    yaw = rng.uniform(-np.pi, np.pi)
                yaw = float((yaw + np.pi) % (2 * np.pi) - np.pi)
                if occupied.try_add(x, y, ln, w, yaw, 0.25):
                    break
            else:
                continue
            origin = np.array([x, y, ground_z])
            parts = _object_parts(cls, ln, w, h, rng)
            box = np.array([x, y, ground_z + h / 2, ln, w, h, yaw])
            albedo = rng.uniform(0.15, 0.6) if cls == "Car" else rng.uniform(0.1, 0.4)
            for p in parts:
                v, f = _part_mesh(p, origin, yaw)
                meshes.append((v, f, albedo, len(objects)))
            objects.append((cls, box, parts, yaw, origin))

    # ---- unlabelled clutter anywhere around the sensor (occluders)
    n_clutter = rng.integers(cfg.n_clutter[0], cfg.n_clutter[1] + 1)
    for _ in range(int(n_clutter)):
        kind = rng.choice(["wall", "pole", "tree", "bush", "barrier", "big"], p=[0.2, 0.25, 0.2, 0.15, 0.1, 0.1])
        yaw = rng.uniform(-np.pi, np.pi)
        if kind == "wall":
            L, W, H = rng.uniform(3, 10), rng.uniform(0.3, 1.0), rng.uniform(1.0, 6.0)
            parts = [P("box", (0, 0, H / 2), (L, W, H))]
        elif kind == "pole":
            H = rng.uniform(2.5, 7)
            r_ = rng.uniform(0.06, 0.18)
            L = W = 2 * r_
            parts = [P("cyl", (0, 0, H / 2), (r_, r_, H))]
        elif kind == "tree":
            H = rng.uniform(2.0, 4.0)
            R = rng.uniform(0.8, 1.5)
            L = W = 2 * R
            parts = [P("cyl", (0, 0, H / 2), (0.15, 0.15, H)), P("sph", (0, 0, H + R * 0.7), (R, R, R))]
        elif kind == "bush":
            R = rng.uniform(0.4, 0.9)
            L = W = 2 * R
            parts = [P("sph", (0, 0, R * 0.6), (R, R, R))]
        elif kind == "barrier":
            L, W = rng.uniform(1.5, 3.0), 0.25
            parts = [P("box", (0, 0, 0.45), (L, W, 0.9))]
        else:  # van / truck / container sized box: a hard negative for Car
            L, W, H = rng.uniform(6.0, 12.0), rng.uniform(2.2, 2.6), rng.uniform(2.5, 3.6)
            parts = [P("box", (0, 0, H / 2 + 0.3), (L, W, H))]
        for _attempt in range(30):
            r = rng.uniform(3.0, 70.0)
            az = rng.uniform(-np.pi, np.pi)
            x, y = r * np.cos(az), r * np.sin(az)
            if occupied.try_add(x, y, L, W, yaw, 0.3):
                add_static(parts, np.array([x, y, ground_z]), yaw, rng.uniform(0.1, 0.7))
                break

    return meshes, objects


def _scan_and_label(cfg: SynthConfig, rng, meshes, objects, calib, return_owner):
    # ---- ray casting
    core = o3d().core
    scene = o3d().t.geometry.RaycastingScene()
    geom_albedo, geom_owner, geom_kind = [], [], []
    for m in meshes:
        v, f, albedo, owner = m[:4]
        scene.add_triangles(core.Tensor(np.ascontiguousarray(v)), core.Tensor(np.ascontiguousarray(f)))
        geom_albedo.append(albedo)
        geom_owner.append(owner)
        geom_kind.append(_KIND_CODES[m[4]] if len(m) > 4 else 0)
    geom_albedo = np.asarray(geom_albedo)
    geom_owner = np.asarray(geom_owner)
    geom_kind = np.asarray(geom_kind)

    if cfg.version == 1:
        elev = np.deg2rad(np.linspace(cfg.fov_up, cfg.fov_down, cfg.n_beams))
        res = cfg.azimuth_res or 0.2
        az = np.deg2rad(np.arange(-180.0, 180.0, res))
        az = az + rng.uniform(0, np.deg2rad(res))  # random spin phase
        ee, aa = np.meshgrid(elev, az, indexing="ij")
    else:
        # per-beam calibration offsets: each laser of a real HDL-64E sits a little off its nominal
        # elevation and azimuth, so rings are unevenly spaced and not perfectly aligned
        elev = beam_elevations(cfg) + np.clip(rng.normal(0, cfg.beam_elev_jitter, cfg.n_beams),
                                              -2 * cfg.beam_elev_jitter, 2 * cfg.beam_elev_jitter)
        az_off = rng.normal(0, 0.05, cfg.n_beams)
        res = cfg.azimuth_res or 0.09
        az = np.arange(-180.0, 180.0, res) + rng.uniform(0, res)
        ee = np.deg2rad(np.repeat(elev[:, None], len(az), 1))
        aa = np.deg2rad(az[None, :] + az_off[:, None])
    dirs = np.stack([np.cos(ee) * np.cos(aa), np.cos(ee) * np.sin(aa), np.sin(ee)], -1).reshape(-1, 3)
    rays = np.concatenate([np.zeros_like(dirs), dirs], 1).astype(np.float32)
    hit = scene.cast_rays(core.Tensor(rays), nthreads=1)
    t = hit["t_hit"].numpy().astype(np.float64)
    gid = hit["geometry_ids"].numpy().astype(np.int64)
    normals = hit["primitive_normals"].numpy().astype(np.float64)
    ok = np.isfinite(t) & (t < cfg.max_range)
    if cfg.version == 1:
        ok &= rng.random(len(t)) >= cfg.drop_prob
        rng_noise = rng.normal(0.0, cfg.range_noise, len(t))
        t_noisy = t + rng_noise
        pts = dirs * t_noisy[:, None]
        cosang = np.abs((normals * dirs).sum(1))
        inten = geom_albedo[np.where(ok, gid, 0)] * (0.3 + 0.7 * cosang) * np.exp(-np.nan_to_num(t, posinf=0) / 200.0)
        inten = np.clip(inten + rng.normal(0, 0.02, len(t)), 0.0, 1.0)
    else:
        n_az = ee.shape[1]
        beam = np.arange(len(t)) // n_az
        kind = geom_kind[np.where(ok, gid, 0)]
        # ring-dependent behaviour: per-laser intensity gain and drop-out rate, a few weak lasers
        gain = np.exp(rng.normal(0.0, 0.25, cfg.n_beams))
        p_drop = rng.uniform(0.0, 2 * cfg.drop_prob, cfg.n_beams)
        p_drop[rng.random(cfg.n_beams) < 0.03] = 0.6
        drop = p_drop[beam] + np.where(kind == 1, 0.3, 0.0) + np.where(kind == 2, 0.7, 0.0)
        ok &= rng.random(len(t)) >= drop
        t_noisy = t + rng.normal(0.0, cfg.range_noise, len(t))
        # vegetation: leaves scatter the beam -> extra noise and returns from inside the crown
        veg = kind == 1
        t_noisy = t_noisy + np.where(veg, rng.normal(0.0, 0.05, len(t)) + rng.exponential(0.3, len(t))
                                     * (rng.random(len(t)) < 0.5), 0.0)
        pts = dirs * t_noisy[:, None]
        cosang = np.abs((normals * dirs).sum(1))
        tt = np.nan_to_num(t, posinf=0.0, nan=0.0)
        inten = geom_albedo[np.where(ok, gid, 0)] * (0.3 + 0.7 * cosang) * gain[beam] * np.exp(-tt / 200.0)
        inten = np.clip(inten + rng.normal(0, 0.02, len(t)), 0.0, 1.0)
        # weak far returns fall under the detection threshold
        ok &= rng.random(len(t)) >= np.clip(0.6 * (tt / 80.0) ** 2 * (1.0 - 2.0 * inten), 0.0, 0.9)
    points = np.concatenate([pts, inten[:, None]], 1)[ok].astype(np.float32)
    owner = geom_owner[np.where(ok, gid, 0)][ok]

    # ---- labels
    names = [o[0] for o in objects]
    boxes = np.array([o[1] for o in objects]).reshape(-1, 7)
    occl = np.zeros(len(objects), dtype=np.int64)
    for k, (_cls, _box, parts, yaw, origin) in enumerate(objects):
        targets = np.concatenate([_sample_part_points(p, origin, yaw) for p in parts], 0)
        d = targets / np.linalg.norm(targets, axis=1, keepdims=True)
        r = np.concatenate([np.zeros_like(d), d], 1).astype(np.float32)
        g = scene.cast_rays(core.Tensor(r), nthreads=1)["geometry_ids"].numpy().astype(np.int64)
        valid = g != o3d().t.geometry.RaycastingScene.INVALID_ID
        own = np.zeros(len(g), dtype=bool)
        own[valid] = geom_owner[g[valid]] == k
        frac = own.mean()
        occl[k] = 0 if frac >= 0.8 else 1 if frac >= 0.4 else 2 if frac > 0 else 3
    objs = KittiObjects.from_lidar_boxes(names, boxes, calib, image_shape=cfg.image_shape, occluded=occl)
    # keep what the camera sees (KITTI only annotates objects in the image)
    _, trunc, in_front = calib.boxes_to_image_bbox(boxes, cfg.image_shape)
    # version 2: labels store truncation with 2 decimals, so 0.995 would be written as "1.00" (fully
    # outside the image); version 1 keeps its original rule so its datasets regenerate bit for bit
    keep = in_front & (trunc < (1.0 if cfg.version == 1 else 0.99))
    objs = objs.select(keep)
    boxes = boxes[keep]
    names = np.asarray(names, dtype="<U16")[keep] if len(names) else np.zeros(0, dtype="<U16")
    if return_owner:
        remap = np.full(len(keep) + 1, -1)
        remap[:-1][keep] = np.arange(int(keep.sum()))
        return points, objs, boxes, names, remap[owner]  # owner -1 indexes the trailing -1
    return points, objs, boxes, names


# ------------------------------------------------------------------------------ version 2 scenes
_KIND_CODES = {"solid": 0, "veg": 1, "glass": 2}


def beam_elevations(cfg: SynthConfig) -> np.ndarray:
    """Nominal laser elevations (deg). Version 2 with 64 beams: the HDL-64E's two blocks, the upper
    32 lasers from ``fov_up`` to -8.33 deg and the lower 32 from -8.83 deg to ``fov_down``, so the
    upper rings are denser than the lower ones like in KITTI scans; otherwise evenly spaced."""
    if cfg.version >= 2 and cfg.n_beams == 64:
        return np.concatenate([np.linspace(cfg.fov_up, -8.33, 32), np.linspace(-8.83, cfg.fov_down, 32)])
    return np.linspace(cfg.fov_up, cfg.fov_down, cfg.n_beams)


class _Ground:
    """Road-aligned terrain: a gently sloped, undulating plane with raised sidewalks behind curbs.

    Heights are a function of the road frame (u along the road, v to its left); the same function
    places every object, so wheels and feet stand on the surface the rays hit.
    """

    def __init__(self, cfg: SynthConfig, rng, road_yaw: float):
        self.yaw = road_yaw
        self.z0 = -cfg.sensor_height + rng.normal(0, 0.03)
        self.slope = rng.normal(0, 0.012, 2)  # along / across the road (~1 % grades)
        self.waves = [(rng.uniform(0, 0.04), rng.uniform(12, 40), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi))
                      for _ in range(2)]
        self.road_half = {1.0: rng.uniform(3.5, 8.0), -1.0: rng.uniform(3.5, 8.0)}
        self.curb = {side: (rng.uniform(0.1, 0.2) if rng.random() < 0.75 else 0.0) for side in (1.0, -1.0)}

    def to_road(self, x, y):
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return x * c + y * s, -x * s + y * c

    def from_road(self, u, v):
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return u * c - v * s, u * s + v * c

    def _height_uv(self, u, v):
        h = self.z0 + self.slope[0] * u + self.slope[1] * v
        for amp, wl, ph, ang in self.waves:
            h = h + amp * np.sin(2 * np.pi * (u * np.cos(ang) + v * np.sin(ang)) / wl + ph)
        # the sensor's own spot stays at z0 (its mount height is the calibration)
        h0 = self.z0 + sum(amp * np.sin(ph) for amp, _, ph, _ in self.waves)
        h = h - (h0 - self.z0)
        for side in (1.0, -1.0):
            h = h + np.where(side * v > self.road_half[side], self.curb[side], 0.0)
        return h

    def height(self, x, y):
        return self._height_uv(*self.to_road(x, y))

    def mesh(self, extent: float = 110.0, step: float = 2.0):
        us = np.arange(-extent, extent + step, step)
        vs = list(np.arange(-extent, extent + step, step))
        for side in (1.0, -1.0):  # a vertical curb face: two vertex columns at the same v
            e = side * self.road_half[side]
            vs += [e - side * 1e-3, e + side * 1e-3]
        vs = np.unique(np.asarray(vs))
        uu, vv = np.meshgrid(us, vs, indexing="ij")
        zz = self._height_uv(uu, vv)
        xx, yy = self.from_road(uu, vv)
        verts = np.stack([xx, yy, zz], -1).reshape(-1, 3).astype(np.float32)
        nu, nv = uu.shape
        i = np.arange(nu - 1)[:, None] * nv + np.arange(nv - 1)[None, :]
        i = i.ravel()
        tris = np.concatenate([np.stack([i, i + nv, i + nv + 1], 1), np.stack([i, i + nv + 1, i + 1], 1)])
        return verts, tris.astype(np.uint32)


def _blob_parts(rng, centre, radii, n: int, r_small=(0.15, 0.45)) -> list[_Part]:
    """A ragged vegetation crown: ``n`` small spheres scattered inside an ellipsoid."""
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d *= rng.random((n, 1)) ** (1 / 3)
    parts = []
    for k in range(n):
        r = rng.uniform(*r_small)
        parts.append(_Part("sph", np.asarray(centre, float) + d[k] * np.asarray(radii, float), np.array([r, r, r])))
    return parts


def _scene_v2(cfg: SynthConfig, rng):
    """Street scenes like KITTI's: sloped road with curbs, facades with windows and recesses,
    hedges and trees with ragged returns, parked-car rows, poles / signs, plus free clutter."""
    P = lambda kind_, c, s: _Part(kind_, np.asarray(c, float), np.asarray(s, float))  # noqa: E731
    road_yaw = float(rng.normal(0, 0.08))
    ground = _Ground(cfg, rng, road_yaw)
    meshes = []
    occupied = _Footprints()
    gv, gf = ground.mesh()
    meshes.append((gv, gf, rng.uniform(0.12, 0.3), -1, "solid"))
    objects = []

    def add_static(parts, x, y, yaw, albedo, kind="solid", z=None):
        origin = np.array([x, y, ground.height(x, y) if z is None else z])
        for p in parts:
            v, f = _part_mesh(p, origin, yaw)
            meshes.append((v, f, albedo, -1, kind))

    def add_object(cls, x, y, yaw, dims, margin=0.25) -> bool:
        ln, w, h = dims
        if not occupied.try_add(x, y, ln, w, yaw, margin):
            return False
        gz = float(ground.height(x, y))
        origin = np.array([x, y, gz])
        parts = _object_parts(cls, ln, w, h, rng)
        albedo = rng.uniform(0.15, 0.7) if cls == "Car" else rng.uniform(0.15, 0.5)
        for p in parts:
            v, f = _part_mesh(p, origin, yaw)
            meshes.append((v, f, albedo, len(objects), "solid"))
        objects.append((cls, np.array([x, y, gz + h / 2, ln, w, h, yaw]), parts, yaw, origin))
        return True

    def sample_dims(cls):
        mean, std = SIZE_PRIORS[cls]
        return np.maximum(rng.normal(mean, std), np.asarray(mean) * 0.6)

    corridor = {}
    for side in (1.0, -1.0):
        rh = ground.road_half[side]
        walk = rng.uniform(1.5, 5.0)
        front = rh + walk  # building line (lateral distance of the facades)
        corridor[side] = front
        # ---- parked-car row along the curb (labelled Cars)
        if rng.random() < 0.55:
            u = rng.uniform(-30.0, 10.0)
            u_end = rng.uniform(30.0, 70.0)
            while u < u_end:
                ln, w, h = sample_dims("Car")
                v = side * (rh - w / 2 - rng.uniform(0.1, 0.5))
                x, y = ground.from_road(u + ln / 2, v)
                yaw = road_yaw + (0.0 if rng.random() < 0.6 else np.pi) + rng.normal(0, 0.04)
                if rng.random() < 0.85:
                    add_object("Car", x, y, float((yaw + np.pi) % (2 * np.pi) - np.pi), (ln, w, h), margin=0.05)
                u += ln + rng.uniform(0.4, 4.0) + (rng.uniform(5, 15) if rng.random() < 0.15 else 0.0)
        # ---- poles, signs, lamp posts on the sidewalk edge
        u = rng.uniform(-40.0, 0.0)
        while u < 80.0:
            x, y = ground.from_road(u, side * (rh + rng.uniform(0.3, 0.8)))
            if occupied.try_add(x, y, 0.4, 0.4, 0.0, 0.1):
                H = rng.uniform(2.5, 8.0)
                r_ = rng.uniform(0.04, 0.15)
                parts = [P("cyl", (0, 0, H / 2), (r_, r_, H))]
                if rng.random() < 0.5:  # sign plate facing the road
                    parts.append(P("box", (0, 0, min(H, 3.0) - 0.4), (0.06, rng.uniform(0.5, 1.0), rng.uniform(0.4, 0.9))))
                elif rng.random() < 0.5:  # lamp arm over the road
                    parts.append(P("box", (0, -side * 0.8, H), (0.15, 1.6, 0.12)))
                add_static(parts, x, y, road_yaw, rng.uniform(0.2, 0.9))
            u += rng.uniform(6.0, 30.0)
        # ---- street trees / hedges between sidewalk and facades
        if rng.random() < 0.6:
            u = rng.uniform(-40.0, 0.0)
            while u < 80.0:
                lat = side * (rh + rng.uniform(0.8, walk + 1.0))
                x, y = ground.from_road(u, lat)
                if rng.random() < 0.5:  # tree: trunk + ragged crown
                    H = rng.uniform(2.0, 4.5)
                    R = rng.uniform(1.0, 2.8)
                    if occupied.try_add(x, y, 0.6, 0.6, 0.0, 0.1):
                        add_static([P("cyl", (0, 0, H / 2), (0.15, 0.15, H))], x, y, 0.0, rng.uniform(0.2, 0.5))
                        add_static(_blob_parts(rng, (0, 0, H + R * 0.6), (R, R, R * 0.8), int(rng.integers(10, 25))),
                                   x, y, 0.0, rng.uniform(0.3, 0.7), kind="veg")
                else:  # hedge segment
                    L = rng.uniform(2.0, 10.0)
                    Hh = rng.uniform(0.6, 2.2)
                    if occupied.try_add(x, y, L, 1.2, road_yaw, 0.1):
                        n = int(L * rng.uniform(2.0, 4.0))
                        add_static(_blob_parts(rng, (0, 0, Hh / 2), (L / 2, 0.5, Hh / 2), n, (0.2, 0.5)),
                                   x, y, road_yaw, rng.uniform(0.3, 0.7), kind="veg")
                u += rng.uniform(3.0, 15.0)
        # ---- facades with windows and recesses (or fences / open lots)
        if rng.random() > cfg.extra.get("p_building_row", 0.75):
            corridor[side] = cfg.max_abs_y
            continue
        u = rng.uniform(-60.0, -40.0)
        while u < 90.0:
            seg = rng.uniform(5.0, 25.0)
            kind = rng.choice(["facade", "fence", "gap"], p=[0.7, 0.15, 0.15])
            setback = front + rng.uniform(0.0, 1.5)
            if kind == "facade":
                H = rng.uniform(3.0, 15.0)
                depth = rng.uniform(4.0, 10.0)
                recess = rng.uniform(0.2, 0.6)
                x, y = ground.from_road(u + seg / 2, side * (setback + recess + depth / 2))
                if occupied.try_add(x, y, seg, depth + 2 * recess, road_yaw, 0.1):
                    base = float(ground.height(x, y))
                    alb = rng.uniform(0.15, 0.7)
                    # back wall: visible through the windows, where glass swallows most returns
                    add_static([P("box", (0, 0, H / 2), (seg, depth, H))], x, y, road_yaw, alb * 0.6, "glass", base)
                    fx, fy = ground.from_road(u + seg / 2, side * (setback + recess / 2))
                    floor_h = rng.uniform(2.8, 3.6)
                    win_w, pier_w = rng.uniform(0.8, 2.0), rng.uniform(0.4, 1.5)
                    sill = rng.uniform(0.6, 1.0)
                    win_h = min(floor_h - sill - 0.3, rng.uniform(1.2, 2.0))
                    parts = []
                    n_floor = max(1, int(H // floor_h))
                    for k in range(n_floor):  # horizontal bands: sill + lintel of every storey
                        z0 = k * floor_h
                        parts.append(P("box", (0, 0, z0 + sill / 2), (seg, recess, sill)))
                        top = min(H, (k + 1) * floor_h)
                        lint = top - (z0 + sill + win_h)
                        if lint > 0.05:
                            parts.append(P("box", (0, 0, top - lint / 2), (seg, recess, lint)))
                    if H > n_floor * floor_h + 0.05:
                        rest = H - n_floor * floor_h
                        parts.append(P("box", (0, 0, n_floor * floor_h + rest / 2), (seg, recess, rest)))
                    pu = -seg / 2
                    while pu < seg / 2:  # piers between the windows
                        pw = min(pier_w, seg / 2 - pu)
                        parts.append(P("box", (pu + pw / 2, 0, H / 2), (pw, recess, H)))
                        pu += pw + win_w
                    add_static(parts, fx, fy, road_yaw, alb, "solid", base)
            elif kind == "fence":
                H = rng.uniform(0.8, 2.2)
                x, y = ground.from_road(u + seg / 2, side * setback)
                if occupied.try_add(x, y, seg, 0.1, road_yaw, 0.1):
                    add_static([P("box", (0, 0, H / 2), (seg, 0.06, H))], x, y, road_yaw, rng.uniform(0.2, 0.8),
                               "veg" if rng.random() < 0.4 else "solid")  # mesh fences: many rays pass
            u += seg + rng.uniform(0.0, 4.0)

    # ---- labelled objects on the road and the sidewalks, inside the camera's field of view
    counts = {
        "Car": rng.integers(cfg.n_cars[0], cfg.n_cars[1] + 1),
        "Pedestrian": rng.integers(cfg.n_pedestrians[0], cfg.n_pedestrians[1] + 1),
        "Cyclist": rng.integers(cfg.n_cyclists[0], cfg.n_cyclists[1] + 1),
    }
    half_fov = np.deg2rad(cfg.camera_half_fov)
    for cls, n in counts.items():
        for _ in range(int(n)):
            for _attempt in range(30):
                r = rng.uniform(*cfg.object_range) if cls == "Car" else rng.uniform(cfg.object_range[0], 40.0)
                az = rng.uniform(-half_fov, half_fov)
                x, y = r * np.cos(az), r * np.sin(az)
                _, lat = ground.to_road(x, y)
                side = 1.0 if lat >= 0 else -1.0
                limit = ground.road_half[side] - 0.8 if cls != "Pedestrian" else corridor[side] - 0.6
                if abs(y) > cfg.max_abs_y or abs(lat) > limit:
                    continue
                dims = sample_dims(cls)
                if cls == "Car":
                    yaw = road_yaw + rng.choice([0.0, np.pi, np.pi / 2, -np.pi / 2], p=[0.45, 0.45, 0.05, 0.05])
                    yaw += rng.normal(0, 0.15)
                elif cls == "Cyclist":
                    yaw = road_yaw + rng.choice([0.0, np.pi]) + rng.normal(0, 0.5)
                else:
                    yaw = rng.uniform(-np.pi, np.pi)
                if add_object(cls, x, y, float((yaw + np.pi) % (2 * np.pi) - np.pi), dims):
                    break

    # ---- free clutter anywhere (occluders and hard negatives)
    n_clutter = rng.integers(cfg.n_clutter[0], cfg.n_clutter[1] + 1)
    for _ in range(int(n_clutter)):
        kind = rng.choice(["wall", "pole", "tree", "bush", "barrier", "big", "bin"],
                          p=[0.12, 0.18, 0.22, 0.2, 0.1, 0.1, 0.08])
        yaw = rng.uniform(-np.pi, np.pi)
        veg = None
        if kind == "wall":
            L, W, H = rng.uniform(3, 10), rng.uniform(0.3, 1.0), rng.uniform(1.0, 6.0)
            parts = [P("box", (0, 0, H / 2), (L, W, H))]
        elif kind == "pole":
            H = rng.uniform(2.5, 7)
            r_ = rng.uniform(0.05, 0.18)
            L = W = 2 * r_
            parts = [P("cyl", (0, 0, H / 2), (r_, r_, H))]
        elif kind == "tree":
            H, R = rng.uniform(1.5, 4.0), rng.uniform(0.8, 2.5)
            L = W = 2 * R
            parts = [P("cyl", (0, 0, H / 2), (0.15, 0.15, H))]
            veg = _blob_parts(rng, (0, 0, H + R * 0.6), (R, R, R * 0.8), int(rng.integers(10, 25)))
        elif kind == "bush":
            R = rng.uniform(0.5, 2.0)
            L, W = 2 * R, 2 * R * rng.uniform(0.5, 1.0)
            parts = []
            veg = _blob_parts(rng, (0, 0, R * 0.5), (R, W / 2, R * 0.6), int(rng.integers(6, 18)), (0.2, 0.5))
        elif kind == "barrier":
            L, W = rng.uniform(1.5, 3.0), 0.25
            parts = [P("box", (0, 0, 0.45), (L, W, 0.9))]
        elif kind == "bin":  # bins, boxes, bollards: small car-height-ish solids
            L, W = rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.2)
            parts = [P("box", (0, 0, 0.6), (L, W, rng.uniform(0.8, 1.4)))]
        else:  # van / truck / container sized box: a hard negative for Car
            L, W, H = rng.uniform(6.0, 12.0), rng.uniform(2.2, 2.6), rng.uniform(2.5, 3.6)
            parts = [P("box", (0, 0, H / 2 + 0.3), (L, W, H))]
        for _attempt in range(30):
            r = rng.uniform(3.0, 70.0)
            az = rng.uniform(-np.pi, np.pi)
            x, y = r * np.cos(az), r * np.sin(az)
            if occupied.try_add(x, y, L, W, yaw, 0.3):
                alb = rng.uniform(0.1, 0.7)
                if parts:
                    add_static(parts, x, y, yaw, alb)
                if veg:
                    add_static(veg, x, y, yaw, rng.uniform(0.3, 0.7), kind="veg")
                break
    return meshes, objects


def write_dataset(out_dir: str | os.PathLike, n: int, seed: int = 0, cfg: SynthConfig | None = None,
                  start: int = 0, progress: bool = True) -> Path:
    """Write ``n`` frames in KITTI object layout under ``out_dir/training``; returns that path."""
    cfg = cfg or SynthConfig()
    split = Path(out_dir) / "training"
    calib = synth_calibration()
    it = range(start, start + n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="synth", unit="frame")
    stats = {"Car": 0, "Pedestrian": 0, "Cyclist": 0, "points": 0}
    for i in it:
        pts, objs, boxes, names = generate_frame(cfg, seed, i, calib)
        fid = f"{i:06d}"
        write_bin(split / "velodyne" / f"{fid}.bin", pts)
        write_label(split / "label_2" / f"{fid}.txt", objs)
        write_calib(split / "calib" / f"{fid}.txt", calib)
        (split / "image_shape").mkdir(parents=True, exist_ok=True)
        (split / "image_shape" / f"{fid}.txt").write_text(f"{cfg.image_shape[0]} {cfg.image_shape[1]}\n")
        inside = points_in_boxes(pts, boxes).sum(0) if len(boxes) else []
        for nm, c in zip(names, inside):
            stats[str(nm)] += int(c > 0)
        stats["points"] += len(pts)
    meta = {"generator": "ffnet_3d.synth", "seed": seed, "start": start, "n": n, "config": asdict(cfg),
            "objects_with_points": {k: v for k, v in stats.items() if k != "points"},
            "mean_points_per_frame": stats["points"] / max(n, 1)}
    (Path(out_dir) / "synth.json").write_text(json.dumps(meta, indent=2))
    return split
