"""Experiment configuration: plain dataclasses, YAML in and out, and the named presets.

Names at this edge follow the KITTI/OpenPCDet vocabulary (``point_cloud_range``, ``voxel_size``,
``max_points_per_voxel``); the model code below takes explicit arguments built from them.

Presets:

* ``kitti``: the standard KITTI grid (range [0, -40, -3, 70.4, 40, 1], voxels 0.05 x 0.05 x 0.1 m)
  with the full-size sparse FFNet encoder; the default.
* ``synth_cpu``: the CPU-feasible recipe the shipped checkpoint was trained with (0.1 x 0.1 x 0.2 m
  voxels, 51.2 x 51.2 m range, a small encoder and neck).
* ``second_kitti`` / ``second_synth_cpu``: the SECOND-style baseline (VoxelBackBone8x shape, plain
  conv BEV neck, same CenterPoint head) on the same grids.
* ``tiny``: seconds-long unit-test model.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml

__all__ = ["DataConfig", "ModelConfig", "TrainConfig", "Config", "PRESETS", "get_preset", "load_config",
           "save_config", "config_from_dict"]

CLASSES = ("Car", "Pedestrian", "Cyclist")


@dataclass
class DataConfig:
    point_cloud_range: tuple = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)
    voxel_size: tuple = (0.05, 0.05, 0.1)
    max_points_per_voxel: int = 5
    max_voxels_train: int = 16000
    max_voxels_test: int = 40000
    classes: tuple = CLASSES
    fov_only: bool = True  # keep points that project into image_2 (KITTI labels exist only there)
    # augmentation (training only)
    flip_y: bool = True
    rot_range: tuple = (-0.785398, 0.785398)
    scale_range: tuple = (0.95, 1.05)
    min_points_in_gt: int = 1  # boxes with fewer LiDAR points get no heatmap target
    # ground-truth sampling (training only): paste up to this many labelled objects per class (in
    # ``classes`` order), cut with their points from other training frames, where they do not collide
    gt_sample_max: tuple = (0, 0, 0)
    gt_sample_min_points: int = 5  # database objects need at least this many points


@dataclass
class ModelConfig:
    name: str = "ffnet3d"  # "ffnet3d" | "second"
    in_chs: int = 4
    # sparse encoder
    stem_chs: int = 16
    dims: tuple = (16, 32, 64, 96)  # ~0.74M encoder parameters, like VoxelBackBone8x's 0.71M
    depths: tuple = (1, 2, 2, 3)
    kernel_sizes: tuple = (3, 3, 5, 7)  # token-mixer depthwise kernels per stage
    cm_kernel_size: int = 3  # channel-mixer depthwise kernel
    mlp_ratio: float = 2.0
    mixer: str = "dw"  # "dw": depthwise large-kernel FFNified attention; "dense3": official dense 3^3 convs
    drop_path_rate: float = 0.0
    bev_chs: int = 128  # channels of the z-compressing conv before the BEV map
    # 2D neck
    neck_dims: tuple = (128, 256)
    neck_depths: tuple = (2, 2)
    neck_kernel_size: int = 7
    neck_up_dims: tuple = (128, 128)
    neck_up_strides: tuple = (1, 2)  # per level: upsampling factor back to the neck's output grid
    # head
    head_chs: int = 64
    sparse_impl: str | None = None  # None: $FFNET_SPARSE_IMPL, else spconv on CUDA, torch on CPU


@dataclass
class TrainConfig:
    epochs: int = 80
    batch_size: int = 4
    lr: float = 3e-3
    weight_decay: float = 0.01
    schedule: str = "onecycle"  # "onecycle" | "cosine"
    warmup_frac: float = 0.1
    grad_clip: float = 10.0
    amp: bool = True  # used only where the device supports it (CUDA)
    seed: int = 0
    num_workers: int = 0
    max_objects: int = 128
    hm_weight: float = 1.0
    loc_weight: float = 0.25
    dir_weight: float = 0.2
    gaussian_overlap: float = 0.1
    min_radius: int = 2
    log_every: int = 20
    ckpt_every: int = 1
    val_frac: float = 0.0
    init: str | None = None  # warm start: weights (model.safetensors / last.pt, or 'shipped') loaded before step 0


@dataclass
class TestConfig:
    score_thresh: float = 0.1
    nms_thresh: float = 0.1
    pre_max: int = 500
    post_max: int = 100
    topk: int = 500


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)

    def to_dict(self) -> dict:
        return _plain(asdict(self))


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _fill(cls, values: dict, where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown config keys in {where}: {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if is_dataclass(default):
            value = _fill(type(default), value or {}, f"{where}.{name}")
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def config_from_dict(d: dict, base: Config | None = None) -> Config:
    """Build a Config from a (possibly partial) nested dict, on top of ``base`` (default: defaults)."""
    base_d = (base or Config()).to_dict()
    merged = _merge(base_d, d or {})
    return _fill(Config, merged, "config")


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------------- presets
_SYNTH_DATA = dict(point_cloud_range=[0.0, -25.6, -3.0, 51.2, 25.6, 1.0], voxel_size=[0.2, 0.2, 0.2],
                   max_voxels_train=12000, max_voxels_test=20000)

PRESETS: dict[str, dict] = {
    "kitti": {},
    "synth_cpu": dict(
        data=_SYNTH_DATA,
        model=dict(stem_chs=16, dims=[16, 24, 32, 48], depths=[1, 1, 1, 1], kernel_sizes=[3, 3, 3, 5],
                   mlp_ratio=2.0, bev_chs=64, neck_dims=[64, 96], neck_depths=[1, 1], neck_up_dims=[48, 48],
                   neck_up_strides=[2, 4], head_chs=32),
        train=dict(epochs=8, batch_size=2, lr=3e-3),
    ),
    "second_kitti": dict(
        model=dict(name="second", stem_chs=16, dims=[16, 32, 64, 64], bev_chs=128, neck_dims=[128, 256],
                   neck_depths=[5, 5], neck_up_dims=[256, 256], neck_up_strides=[1, 2]),
    ),
    "second_synth_cpu": dict(
        data=_SYNTH_DATA,
        model=dict(name="second", stem_chs=16, dims=[16, 24, 32, 48], bev_chs=64, neck_dims=[64, 96],
                   neck_depths=[2, 2], neck_up_dims=[48, 48], neck_up_strides=[2, 4], head_chs=32),
        train=dict(epochs=8, batch_size=2, lr=3e-3),
    ),
    "tiny": dict(
        data=dict(point_cloud_range=[0.0, -12.8, -3.0, 25.6, 12.8, 1.0], voxel_size=[0.2, 0.2, 0.2],
                  max_voxels_train=4000, max_voxels_test=6000),
        model=dict(stem_chs=8, dims=[8, 8, 16, 16], depths=[1, 1, 1, 1], kernel_sizes=[3, 3, 3, 5],
                   mlp_ratio=1.0, bev_chs=16, neck_dims=[16, 16], neck_depths=[1, 1], neck_kernel_size=3,
                   neck_up_dims=[16, 16], neck_up_strides=[1, 2], head_chs=16),
        train=dict(epochs=1, batch_size=2, lr=3e-3, log_every=1),
    ),
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return config_from_dict(PRESETS[name])


def load_config(spec: str | os.PathLike) -> Config:
    """A preset name, or a YAML file (optionally with ``preset: NAME`` as its base)."""
    spec_s = str(spec)
    if spec_s in PRESETS:
        return get_preset(spec_s)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"config {spec_s!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a file")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    base = get_preset(d.pop("preset")) if "preset" in d else None
    return config_from_dict(d, base)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
