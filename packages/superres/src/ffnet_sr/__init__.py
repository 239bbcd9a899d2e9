"""ffnet_sr: FFNetSR super-resolution (arXiv 2406.02021) on ffnet-core blocks.

``import ffnet_sr`` needs only torch (+ numpy/Pillow for IO). BasicSR is imported only by
``ffnet_sr.basicsr_plugin``, which registers the archs into BasicSR's ``ARCH_REGISTRY``. The archs (and with
them torch and ffnet-core) load on first use of one of their names, so ``ffnet-sr --help`` does not wait for them.
"""

_ARCHS = ("FFNetSR", "VARIANTS", "create_model", "ffnetsr", "ffnetsr_light", "ffnetsr_mini")

__all__ = [*_ARCHS, "load_pretrained"]
__version__ = "0.1.0"


def load_pretrained(scale: int = 2, model: str = "ffnetsr_mini", device: str = "cpu"):
    """The project-trained weights shipped in the package, as an eval-mode model."""
    from .weights import load_model, pretrained_path

    return load_model(pretrained_path(scale, model), device)[0]


def __getattr__(name: str):
    if name in _ARCHS:
        from . import archs

        return getattr(archs, name)
    raise AttributeError(f"module 'ffnet_sr' has no attribute {name!r}")
