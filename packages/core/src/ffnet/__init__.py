"""ffnet-core: MetaMixer, FFNified attention (1D, 2D, sparse 3D), re-parameterization, FFNet-1..4.

Quick start::

    import ffnet
    model = ffnet.create_model("ffnet_1")          # also timm.create_model("ffnet_1") after `import ffnet`
    ffnet.reparameterize_model(model.eval())        # fuse for deployment
    print(ffnet.profile(model, (1, 3, 256, 256)))   # params and MACs
"""
from . import layers, models
from .factory import create_model, list_models
from .layers import ChannelMixer, FFNetBlock, FFNifiedAttention, MetaMixer, get_backend
from .profile import count_params, profile
from .reparam import reparameterize_model

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "reparameterize_model", "profile", "count_params", "MetaMixer",
           "FFNifiedAttention", "ChannelMixer", "FFNetBlock", "get_backend", "layers", "models"]
