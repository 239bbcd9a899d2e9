"""Model families of ffnet-core (registered in timm's model registry on import)."""
from .ffnet import FFNET_VARIANTS, FFNet, FFNetStage, PatchMerging

__all__ = ["FFNet", "FFNetStage", "PatchMerging", "FFNET_VARIANTS"]
