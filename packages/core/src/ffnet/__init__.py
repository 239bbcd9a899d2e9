"""ffnet-core: MetaMixer, FFNified attention (1D, 2D, sparse 3D), re-parameterization, FFNet-1..4.

Quick start::

    import ffnet
    model = ffnet.create_model("ffnet_1")          # also timm.create_model("ffnet_1") after `import ffnet`
    ffnet.reparameterize_model(model.eval())        # fuse for deployment
    print(ffnet.profile(model, (1, 3, 256, 256)))   # params and MACs

``import ffnet`` itself imports neither torch nor timm (the ``ffnet`` console script's ``--help`` answers at
once, and ``ffnet_ts`` / ``ffnet_3d``, which use only :mod:`ffnet.layers`, do not pay for timm): the names
below load their module on first use, and the FFNet models are registered with timm as soon as timm is
imported (at once if it already is), so ``timm.create_model("ffnet_1")`` works after ``import ffnet`` in
either import order (see :mod:`ffnet._timm_hook`).
"""
from __future__ import annotations

import importlib
import sys
import types

from . import _timm_hook

__version__ = "0.1.0"

# public name -> the submodule that defines it
_LAZY = {
    "layers": None, "models": None,
    "create_model": "factory", "list_models": "factory",
    "ChannelMixer": "layers", "FFNetBlock": "layers", "FFNifiedAttention": "layers", "MetaMixer": "layers",
    "get_backend": "layers",
    "count_params": "profile", "profile": "profile",
    "reparameterize_model": "reparam",
}
__all__ = ["create_model", "list_models", "reparameterize_model", "profile", "count_params", "MetaMixer",
           "FFNifiedAttention", "ChannelMixer", "FFNetBlock", "get_backend", "layers", "models"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ffnet' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name] or name}", __name__)
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # On a submodule's first import the import system binds it to its parent's attribute. The function
        # ``ffnet.profile`` shares its name with the submodule ``ffnet.profile``: ``from ffnet.profile import
        # count_params`` must not turn ``ffnet.profile`` into a module.
        if name == "profile" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


_timm_hook.register_when_timm_loads()
