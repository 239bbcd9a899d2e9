"""Building blocks of FFNet: backends, re-parameterizable convs, MetaMixer and its instances."""
from .backends import BACKEND_NAMES, Backend, DenseBackend, get_backend
from .blocks import ChannelMixer, FFNetBlock, FFNifiedAttention
from .conv import ConvNorm, RepDWConv, ResidualBNPointwise, find_batchnorm, fuse_conv_bn, pad_kernel
from .metamixer import (
    DotProductKeys,
    MetaMixer,
    SplitHeads,
    WeightedValues,
    convnext_mixer,
    ffn_mixer,
    self_attention_mixer,
)
from .misc import DropPath, LayerScale, drop_path

__all__ = [
    "BACKEND_NAMES", "Backend", "DenseBackend", "get_backend",
    "ConvNorm", "RepDWConv", "ResidualBNPointwise", "find_batchnorm", "fuse_conv_bn", "pad_kernel",
    "MetaMixer", "SplitHeads", "DotProductKeys", "WeightedValues", "self_attention_mixer", "ffn_mixer",
    "convnext_mixer", "FFNifiedAttention", "ChannelMixer", "FFNetBlock", "DropPath", "LayerScale", "drop_path",
]
