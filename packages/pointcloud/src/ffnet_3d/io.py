"""Point-cloud and KITTI-format IO with validation.

Readers raise :class:`PointCloudError` (a ``ValueError``) with one clear line for truncated or
misaligned files, empty clouds and malformed labels/calibration; rows holding NaN/inf are dropped
with a warning (what users of KITTI-style loaders expect), a cloud that is *all* NaN is an error.

Formats:

* KITTI velodyne ``.bin``: float32 ``(x, y, z, reflectance)``, reflectance in [0, 1].
* nuScenes ``.pcd.bin``: float32 ``(x, y, z, intensity, ring)``, intensity 0..255.
* ``.pcd`` / ``.ply``: through open3d (``ffnet_3d._open3d``); an ``intensity`` attribute is used
  when present, otherwise zeros.

:func:`read_points` always returns ``(N, 4)`` float32 ``(x, y, z, intensity in [0, 1])``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .boxes import Calibration

__all__ = [
    "PointCloudError",
    "KittiObjects",
    "read_bin",
    "read_points",
    "write_bin",
    "read_label",
    "write_label",
    "read_calib",
    "write_calib",
    "atomic_write_bytes",
    "atomic_write_text",
    "KittiFrames",
    "data_root",
]

KITTI_CLASSES = ("Car", "Pedestrian", "Cyclist")


class PointCloudError(ValueError):
    """Bad input file (format, size, content)."""


# ------------------------------------------------------------------------------------ writing
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same directory, then rename over ``path`` (core's helper)."""
    from ffnet.fileio import atomic_write_bytes as write

    write(path, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


# ------------------------------------------------------------------------------------- points
def _clean(points: np.ndarray, path: Path) -> np.ndarray:
    if len(points) == 0:
        raise PointCloudError(f"{path}: empty point cloud")
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        n_bad = int((~finite).sum())
        if n_bad == len(points):
            raise PointCloudError(f"{path}: all {n_bad} points contain NaN/inf")
        warnings.warn(f"{path}: dropped {n_bad} of {len(points)} points containing NaN/inf", stacklevel=3)
        points = points[finite]
    return points


def read_bin(path: str | os.PathLike, num_features: int = 4) -> np.ndarray:
    """Raw float32 ``.bin`` scan -> (N, num_features); size must be a multiple of the row size."""
    path = Path(path)
    if not path.is_file():
        raise PointCloudError(f"{path}: no such file")
    size = path.stat().st_size
    row = 4 * num_features
    if size % row:
        raise PointCloudError(
            f"{path}: {size} bytes is not a multiple of {row} ({num_features} float32 per point); "
            "truncated file or wrong format"
        )
    pts = np.fromfile(path, dtype=np.float32).reshape(-1, num_features)
    return _clean(pts, path)


def _is_nuscenes(path: Path) -> bool:
    return path.name.endswith(".pcd.bin")


def read_points(path: str | os.PathLike, num_features: int | None = None) -> np.ndarray:
    """Load a scan as (N, 4) float32 ``(x, y, z, intensity in [0, 1])``.

    Args:
        path: ``.bin`` (KITTI, 4 floats), ``.pcd.bin`` (nuScenes, 5 floats), ``.pcd`` or ``.ply``.
        num_features: override the float count per point of a ``.bin`` file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".bin":
        nf = num_features or (5 if _is_nuscenes(path) else 4)
        if nf < 3:
            raise PointCloudError(f"{path}: need at least 3 floats per point, got {nf}")
        raw = read_bin(path, nf)
        out = np.zeros((len(raw), 4), dtype=np.float32)
        out[:, :3] = raw[:, :3]
        if nf >= 4:
            out[:, 3] = raw[:, 3]
            if _is_nuscenes(path):
                out[:, 3] /= 255.0  # nuScenes intensity is 0..255
        return out
    if suffix in (".pcd", ".ply"):
        return _read_open3d(path)
    raise PointCloudError(f"{path}: unsupported point-cloud format {suffix!r} (use .bin, .pcd.bin, .pcd, .ply)")


def _read_open3d(path: Path) -> np.ndarray:
    from ._open3d import o3d

    if not path.is_file():
        raise PointCloudError(f"{path}: no such file")
    pcd = o3d().t.io.read_point_cloud(str(path))
    if "positions" not in pcd.point or pcd.point.positions.shape[0] == 0:
        raise PointCloudError(f"{path}: empty point cloud or unreadable file")
    xyz = pcd.point.positions.numpy().astype(np.float32)
    out = np.zeros((len(xyz), 4), dtype=np.float32)
    out[:, :3] = xyz
    if "intensity" in pcd.point:
        inten = pcd.point.intensity.numpy().reshape(len(xyz), -1)[:, 0].astype(np.float32)
        if np.nanmax(inten) > 1.0:
            inten = inten / 255.0
        out[:, 3] = inten
    return _clean(out, path)


def write_bin(path: str | os.PathLike, points: np.ndarray) -> None:
    atomic_write_bytes(path, np.ascontiguousarray(points, dtype=np.float32).tobytes())


def write_pcd(path: str | os.PathLike, points: np.ndarray) -> None:
    """Write (N, 4) points as ``.pcd``/``.ply`` with an ``intensity`` attribute (via open3d)."""
    from ._open3d import o3d

    o3d_ = o3d()
    pcd = o3d_.t.geometry.PointCloud()
    pcd.point.positions = o3d_.core.Tensor(np.ascontiguousarray(points[:, :3], dtype=np.float32))
    pcd.point.intensity = o3d_.core.Tensor(np.ascontiguousarray(points[:, 3:4], dtype=np.float32))
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if not o3d_.t.io.write_point_cloud(str(tmp), pcd):
        raise OSError(f"open3d could not write {path}")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------- labels
@dataclass
class KittiObjects:
    """The objects of one frame in KITTI ``label_2`` layout (arrays of equal length)."""

    name: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<U16"))
    truncated: np.ndarray = field(default_factory=lambda: np.zeros(0))
    occluded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    alpha: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bbox: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    dims: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # h, w, l (metres)
    loc: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # bottom centre, rect camera frame
    ry: np.ndarray = field(default_factory=lambda: np.zeros(0))
    score: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.name)

    def select(self, mask) -> KittiObjects:
        return KittiObjects(
            self.name[mask], self.truncated[mask], self.occluded[mask], self.alpha[mask], self.bbox[mask],
            self.dims[mask], self.loc[mask], self.ry[mask], None if self.score is None else self.score[mask],
        )

    def boxes_lidar(self, calib: Calibration) -> np.ndarray:
        return calib.boxes_camera_to_lidar(self.loc, self.dims, self.ry)

    def to_lines(self) -> list[str]:
        lines = []
        for i in range(len(self)):
            vals = [
                self.name[i],
                f"{self.truncated[i]:.2f}",
                f"{int(self.occluded[i])}",
                f"{self.alpha[i]:.2f}",
                *(f"{v:.2f}" for v in self.bbox[i]),
                *(f"{v:.2f}" for v in self.dims[i]),
                *(f"{v:.2f}" for v in self.loc[i]),
                f"{self.ry[i]:.2f}",
            ]
            if self.score is not None:
                vals.append(f"{self.score[i]:.4f}")
            lines.append(" ".join(vals))
        return lines

    @staticmethod
    def from_lidar_boxes(
        names, boxes: np.ndarray, calib: Calibration, scores=None, image_shape=(375, 1242),
        truncated=None, occluded=None,
    ) -> KittiObjects:
        """Build KITTI objects (camera frame, 2D box from projection) from LiDAR boxes."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        loc, dims, ry = calib.boxes_lidar_to_camera(boxes)
        bbox, trunc, _ = calib.boxes_to_image_bbox(boxes, image_shape)
        n = len(boxes)
        return KittiObjects(
            name=np.asarray(names, dtype="<U16").reshape(n),
            truncated=trunc if truncated is None else np.asarray(truncated, dtype=np.float64),
            occluded=np.zeros(n, dtype=np.int64) if occluded is None else np.asarray(occluded, dtype=np.int64),
            alpha=calib.alpha(loc, ry),
            bbox=bbox,
            dims=dims,
            loc=loc,
            ry=ry,
            score=None if scores is None else np.asarray(scores, dtype=np.float64).reshape(n),
        )


def parse_label_lines(lines: list[str], source: str = "<label>") -> KittiObjects:
    rows = []
    for i, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (15, 16):
            raise PointCloudError(
                f"{source}:{i}: expected 15 fields (16 with score), got {len(parts)}: {line.strip()!r}"
            )
        try:
            vals = [float(v) for v in parts[1:]]
        except ValueError as e:
            raise PointCloudError(f"{source}:{i}: non-numeric field ({e})") from None
        rows.append((parts[0], vals))
    has_score = [len(v) == 15 for _, v in rows]
    if rows and any(has_score) and not all(has_score):
        raise PointCloudError(f"{source}: mixes lines with and without a score field")
    if not rows:
        return KittiObjects()
    names = np.array([r[0] for r in rows], dtype="<U16")
    v = np.array([r[1] for r in rows], dtype=np.float64)
    return KittiObjects(
        name=names,
        truncated=v[:, 0],
        occluded=v[:, 1].astype(np.int64),
        alpha=v[:, 2],
        bbox=v[:, 3:7],
        dims=v[:, 7:10],
        loc=v[:, 10:13],
        ry=v[:, 13],
        score=v[:, 14] if all(has_score) else None,
    )


def read_label(path: str | os.PathLike) -> KittiObjects:
    """Read a KITTI ``label_2`` (15 fields) or result file (16 fields, last = score)."""
    path = Path(path)
    if not path.is_file():
        raise PointCloudError(f"{path}: no such file")
    return parse_label_lines(path.read_text().splitlines(), str(path))


def write_label(path: str | os.PathLike, objects: KittiObjects) -> None:
    lines = objects.to_lines()
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


# -------------------------------------------------------------------------------- calibration
_CALIB_KEYS = {"P2": (3, 4), "R0_rect": (3, 3), "Tr_velo_to_cam": (3, 4)}
_CALIB_ALIASES = {"R_rect": "R0_rect", "Tr_velo_cam": "Tr_velo_to_cam"}


def read_calib(path: str | os.PathLike) -> Calibration:
    """Read a KITTI object calibration file (needs P2, R0_rect, Tr_velo_to_cam)."""
    path = Path(path)
    if not path.is_file():
        raise PointCloudError(f"{path}: no such file")
    mats = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if ":" not in line:
            continue
        key, _, rest = line.partition(":")
        key = _CALIB_ALIASES.get(key.strip(), key.strip())
        if key not in _CALIB_KEYS:
            continue
        shape = _CALIB_KEYS[key]
        try:
            vals = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            raise PointCloudError(f"{path}:{i}: non-numeric value in {key}") from None
        if vals.size != shape[0] * shape[1]:
            raise PointCloudError(f"{path}:{i}: {key} needs {shape[0] * shape[1]} values, got {vals.size}")
        mats[key] = vals.reshape(shape)
    missing = [k for k in _CALIB_KEYS if k not in mats]
    if missing:
        raise PointCloudError(f"{path}: missing calibration entries {missing}")
    return Calibration(mats["P2"], mats["R0_rect"], mats["Tr_velo_to_cam"])


def write_calib(path: str | os.PathLike, calib: Calibration) -> None:
    def fmt(m):
        return " ".join(f"{v:.12e}" for v in np.asarray(m).reshape(-1))

    p0 = calib.P2.copy()
    p0[:, 3] = 0
    text = "".join(
        [
            f"P0: {fmt(p0)}\n",
            f"P1: {fmt(p0)}\n",
            f"P2: {fmt(calib.P2)}\n",
            f"P3: {fmt(calib.P2)}\n",
            f"R0_rect: {fmt(calib.R0)}\n",
            f"Tr_velo_to_cam: {fmt(calib.V2C)}\n",
            f"Tr_imu_to_velo: {fmt(np.eye(4)[:3])}\n",
        ]
    )
    atomic_write_text(path, text)


# ----------------------------------------------------------------------------- dataset layout
def data_root(path: str | os.PathLike | None = None) -> Path:
    """Resolve a data directory: explicit path, else ``$FFNET_DATA_DIR/pointcloud``."""
    if path is not None:
        return Path(path)
    env = os.environ.get("FFNET_DATA_DIR")
    if not env:
        raise PointCloudError("no data directory given and FFNET_DATA_DIR is not set")
    return Path(env) / "pointcloud"


class KittiFrames:
    """Index of a KITTI-object-layout directory.

    ``root`` may be the split directory itself (holding ``velodyne/``) or a dataset root with
    ``training/`` (or ``kitti/training``) inside.
    """

    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        for cand in (root, root / "training", root / "kitti" / "training"):
            if (cand / "velodyne").is_dir():
                self.split_dir = cand
                break
        else:
            raise PointCloudError(f"{root}: no velodyne/ directory (expected KITTI object layout)")
        self.ids = sorted(p.stem for p in (self.split_dir / "velodyne").glob("*.bin"))
        if not self.ids:
            raise PointCloudError(f"{self.split_dir / 'velodyne'}: no .bin scans")

    def __len__(self) -> int:
        return len(self.ids)

    def velodyne(self, fid: str) -> Path:
        return self.split_dir / "velodyne" / f"{fid}.bin"

    def label_path(self, fid: str) -> Path:
        return self.split_dir / "label_2" / f"{fid}.txt"

    def calib_path(self, fid: str) -> Path:
        return self.split_dir / "calib" / f"{fid}.txt"

    def has_labels(self) -> bool:
        return all(self.label_path(f).is_file() for f in self.ids)

    def points(self, fid: str) -> np.ndarray:
        return read_points(self.velodyne(fid))

    def labels(self, fid: str) -> KittiObjects:
        return read_label(self.label_path(fid))

    def calib(self, fid: str) -> Calibration:
        return read_calib(self.calib_path(fid))

    def image_shape(self, fid: str) -> tuple[int, int]:
        """(H, W) of ``image_2/<id>.png`` when present (PNG header), else KITTI's 375 x 1242."""
        png = self.split_dir / "image_2" / f"{fid}.png"
        if png.is_file():
            with open(png, "rb") as f:
                head = f.read(24)
            if head[:8] == b"\x89PNG\r\n\x1a\n":
                w = int.from_bytes(head[16:20], "big")
                h = int.from_bytes(head[20:24], "big")
                return h, w
        shape_file = self.split_dir / "image_shape" / f"{fid}.txt"
        if shape_file.is_file():
            h, w = (int(v) for v in shape_file.read_text().split()[:2])
            return h, w
        return 375, 1242
