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
    azimuth_res: float = 0.2
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
    labelled object its ray hit, -1 for background.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    calib = calib or synth_calibration()
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

    # ---- ray casting
    core = o3d().core
    scene = o3d().t.geometry.RaycastingScene()
    geom_albedo, geom_owner = [], []
    for v, f, albedo, owner in meshes:
        scene.add_triangles(core.Tensor(np.ascontiguousarray(v)), core.Tensor(np.ascontiguousarray(f)))
        geom_albedo.append(albedo)
        geom_owner.append(owner)
    geom_albedo = np.asarray(geom_albedo)
    geom_owner = np.asarray(geom_owner)

    elev = np.deg2rad(np.linspace(cfg.fov_up, cfg.fov_down, cfg.n_beams))
    az = np.deg2rad(np.arange(-180.0, 180.0, cfg.azimuth_res))
    az = az + rng.uniform(0, np.deg2rad(cfg.azimuth_res))  # random spin phase
    ee, aa = np.meshgrid(elev, az, indexing="ij")
    dirs = np.stack([np.cos(ee) * np.cos(aa), np.cos(ee) * np.sin(aa), np.sin(ee)], -1).reshape(-1, 3)
    rays = np.concatenate([np.zeros_like(dirs), dirs], 1).astype(np.float32)
    hit = scene.cast_rays(core.Tensor(rays), nthreads=1)
    t = hit["t_hit"].numpy().astype(np.float64)
    gid = hit["geometry_ids"].numpy().astype(np.int64)
    normals = hit["primitive_normals"].numpy().astype(np.float64)
    ok = np.isfinite(t) & (t < cfg.max_range)
    ok &= rng.random(len(t)) >= cfg.drop_prob
    rng_noise = rng.normal(0.0, cfg.range_noise, len(t))
    t_noisy = t + rng_noise
    pts = dirs * t_noisy[:, None]
    cosang = np.abs((normals * dirs).sum(1))
    inten = geom_albedo[np.where(ok, gid, 0)] * (0.3 + 0.7 * cosang) * np.exp(-np.nan_to_num(t, posinf=0) / 200.0)
    inten = np.clip(inten + rng.normal(0, 0.02, len(t)), 0.0, 1.0)
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
    keep = in_front & (trunc < 1.0)
    objs = objs.select(keep)
    boxes = boxes[keep]
    names = np.asarray(names, dtype="<U16")[keep] if len(names) else np.zeros(0, dtype="<U16")
    if return_owner:
        remap = np.full(len(keep) + 1, -1)
        remap[:-1][keep] = np.arange(int(keep.sum()))
        return points, objs, boxes, names, remap[owner]  # owner -1 indexes the trailing -1
    return points, objs, boxes, names


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
