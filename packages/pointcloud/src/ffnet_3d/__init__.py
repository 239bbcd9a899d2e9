"""FFNet-3D: LiDAR 3D object detection with a sparse FFNet backbone, KITTI format, CPU-correct and GPU-ready.

Modules (imported on demand; ``import ffnet_3d`` itself is light):

* :mod:`ffnet_3d.io` / :mod:`ffnet_3d.boxes`: KITTI velodyne / label_2 / calib, nuScenes ``.pcd.bin``,
  ``.pcd`` / ``.ply`` (open3d), camera <-> LiDAR boxes.
* :mod:`ffnet_3d.voxelize`: deterministic numba voxelizer; spconv ``PointToVoxel`` on CUDA.
* :mod:`ffnet_3d.iou`: rotated BEV / 3D IoU and NMS (numba and torch).
* :mod:`ffnet_3d.kitti_eval`: KITTI AP (R40 / R11; bbox, BEV, 3D).
* :mod:`ffnet_3d.synth`: synthetic 64-beam LiDAR scenes (open3d ray casting) in KITTI format.
* :mod:`ffnet_3d.model`, :mod:`ffnet_3d.centerpoint`: the detector and the SECOND-style baseline.
* :mod:`ffnet_3d.train`, :mod:`ffnet_3d.inference`, :mod:`ffnet_3d.cli` (``ffnet-3d``).
"""

__version__ = "0.1.0"
