"""Register the FFNet models with timm when timm is imported, not when ffnet is.

``timm.create_model("ffnet_1")`` needs ``ffnet.models`` to have run its ``@register_model`` decorators, and
importing timm (with torch and torchvision) costs seconds. So ``import ffnet`` registers at once only if timm
is already imported; otherwise it puts a finder on ``sys.meta_path`` that wraps timm's loader, imports
``ffnet.models`` right after timm's ``__init__`` has run, and removes itself.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

_MODELS = "ffnet.models"


class _RegisterAfterTimm(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for ``timm`` it returns the normal spec with a loader that registers afterwards."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        _remove()  # one use: the finder must not find its own spec below, nor run for a re-import
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


class _Loader(importlib.abc.Loader):
    def __init__(self, inner) -> None:
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        self.inner.exec_module(module)
        importlib.import_module(_MODELS)  # timm is complete here: its registry is ready for ffnet's models

    def __getattr__(self, name):  # get_resource_reader, is_package, ... as the real loader has them
        return getattr(self.inner, name)


def _remove() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisterAfterTimm)]


def register_when_timm_loads() -> None:
    """Register now if timm is imported (or being imported), else as soon as it is."""
    if "timm" in sys.modules:
        importlib.import_module(_MODELS)
    elif not any(isinstance(f, _RegisterAfterTimm) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTimm())
