"""The one place that imports open3d.

open3d 0.20's wheels link ``libusb-1.0.so.0``, which minimal Debian images lack. The PyPI package
``libusb-package`` ships that library; it must be loaded with ``RTLD_GLOBAL`` *before* the first
``import open3d`` (environment.md §5). Every other module of ffnet_3d calls :func:`o3d` instead of
importing open3d itself, so the workaround lives here and only here.

Offscreen rendering (Filament) needs a Vulkan loader plus an ICD (Debian ``libvulkan1`` +
``mesa-vulkan-drivers``); :func:`vulkan_available` checks for both without touching open3d.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from functools import cache

__all__ = ["o3d", "vulkan_available"]


def _preload_libusb() -> None:
    if ctypes.util.find_library("usb-1.0"):
        return  # the system library is there (apt libusb-1.0-0): nothing to do
    try:
        import libusb_package
    except ImportError:  # pragma: no cover - declared dependency on linux
        return
    path = libusb_package.get_library_path()
    if path is not None:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


@cache
def o3d():
    """Return the ``open3d`` module, importing it once after the libusb preload."""
    _preload_libusb()
    import open3d

    return open3d


def vulkan_available() -> bool:
    """True when a Vulkan loader and at least one ICD manifest are installed."""
    if not ctypes.util.find_library("vulkan"):
        return False
    if os.environ.get("VK_ICD_FILENAMES") or os.environ.get("VK_DRIVER_FILES"):
        return True
    dirs = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d"]
    return any(glob.glob(os.path.join(d, "*.json")) for d in dirs)
