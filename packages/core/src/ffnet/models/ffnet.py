"""FFNet image backbones (FFNet-1..4): FFNified attention + ConvNeXt-like channel mixer.

Paper: "FFNet: MetaMixer-based Efficient Convolutional Mixer Design" (v1: "MetaMixer Is All You
Need"), Yun, Lee, Ro, arXiv 2406.02021. Re-implemented from the architecture facts (no code taken
from the official release). Differences from the official release:
  * registered through timm's public API only (``build_model_with_cfg``), so it survives timm upgrades;
  * every re-parameterizable unit has ``reparameterize()`` and an ``inference_mode`` flag
    (the official export script swaps modules instead);
  * the final BN is applied in ``forward_head`` (it commutes with average pooling).

Layout: stem (3x3 s2 conv+BN, GELU, 3x3 s2 conv+BN) -> 4 stages (stages 2-4 open with a stride-2
downsampler: depthwise 7x7+3x3 re-param pair with channel multiplier 2, then ``x + 1x1(BN(x))``) ->
BN -> global average pool -> Linear.
"""
from __future__ import annotations

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from torch import nn

from ffnet.layers import ConvNorm, FFNetBlock, RepDWConv, ResidualBNPointwise

__all__ = ["FFNet", "FFNetStage", "PatchMerging", "FFNET_VARIANTS"]


class PatchMerging(nn.Module):
    """Stride-2 downsampler: depthwise 7x7 + 3x3 (channel multiplier 2), then ``x + 1x1(BN(x))``."""

    def __init__(self, in_chs: int, out_chs: int, *, inference_mode: bool = False):
        super().__init__()
        self.reduce = RepDWConv(in_chs, out_chs, 7, 3, stride=2, inference_mode=inference_mode)
        self.proj = ResidualBNPointwise(out_chs, inference_mode=inference_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.reduce(x))


class FFNetStage(nn.Module):
    """An optional downsampler followed by ``depth`` FFNet blocks at constant width."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, *, downsample: bool, kernel_size: int,
                 small_kernel: int | None, cm_kernel_size: int, cm_small_kernel: int | None, mlp_ratio: float,
                 ls_init_value: float | None, drop_path_rates: list[float], inference_mode: bool = False):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = PatchMerging(in_chs, out_chs, inference_mode=inference_mode) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            FFNetBlock(out_chs, kernel_size, small_kernel, cm_kernel_size, cm_small_kernel, mlp_ratio, ls_init_value,
                       drop_path_rates[i],
                       # NOTE: the released models use BN only in the re-parameterizable (7x7 + 3x3) token-mixer
                       # convs; the 3x3 token-mixer convs are plain biased convs. Channel-mixer convs always use BN.
                       tm_dw_norm=small_kernel is not None, cm_dw_norm=True, inference_mode=inference_mode)
            for i in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class FFNet(nn.Module):
    """FFNet image classifier / backbone.

    Args:
        in_chans: input image channels.
        num_classes: classifier outputs (0: no classifier, ``forward`` returns pooled features).
        depths: blocks per stage.
        dims: channels per stage.
        stem_chs: hidden width of the two-conv stem.
        kernel_sizes: token-mixer depthwise kernel per stage.
        small_kernel_sizes: parallel re-param kernel of the token mixer per stage (None: plain conv).
        cm_kernel_sizes: channel-mixer depthwise kernel per stage.
        cm_small_kernel_sizes: parallel re-param kernel of the channel mixer per stage.
        mlp_ratio: channel-mixer expansion.
        ls_init_value: layer-scale init (None: no layer scale).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, spaced linearly over all blocks.
        global_pool: timm pool type.
        inference_mode: build the re-parameterized (deploy) graph directly.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, depths=(2, 2, 8, 2), dims=(80, 160, 320, 640),
                 stem_chs: int = 64, kernel_sizes=(3, 3, 7, 7), small_kernel_sizes=(None, None, 3, 3),
                 cm_kernel_sizes=(3, 3, 3, 3), cm_small_kernel_sizes=(None, None, None, None), mlp_ratio: float = 3.0,
                 ls_init_value: float | None = None, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 global_pool: str = "avg", inference_mode: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.stem = nn.Sequential(
            ConvNorm(in_chans, stem_chs, 3, stride=2, inference_mode=inference_mode),
            nn.GELU(),
            ConvNorm(stem_chs, dims[0], 3, stride=2, inference_mode=inference_mode),
        )
        dpr = [r.tolist() for r in torch.linspace(0, drop_path_rate, sum(depths)).split(list(depths))]
        stages, self.feature_info, prev = [], [], dims[0]
        for i, depth in enumerate(depths):
            stages.append(FFNetStage(
                prev, dims[i], depth, downsample=i > 0, kernel_size=kernel_sizes[i], small_kernel=small_kernel_sizes[i],
                cm_kernel_size=cm_kernel_sizes[i], cm_small_kernel=cm_small_kernel_sizes[i], mlp_ratio=mlp_ratio,
                ls_init_value=ls_init_value, drop_path_rates=dpr[i], inference_mode=inference_mode))
            self.feature_info.append(dict(num_chs=dims[i], reduction=4 * 2 ** i, module=f"stages.{i}"))
            prev = dims[i]
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = prev
        self.norm = nn.BatchNorm2d(prev)
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(prev, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else [
            (r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for s in self.stages:
            s.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, C0, H/4, W/4)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)  # (B, C3, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(self.norm(x))  # (B, C3)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# Variants are data. Kernel rule of the release: the 7x7 convs are 7+3 re-param pairs with BN.
_T = (None, None, 3, 3)
FFNET_VARIANTS: dict[str, dict] = {
    "ffnet_1": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), cm_kernel_sizes=(3, 3, 3, 3),
                    cm_small_kernel_sizes=(None,) * 4, drop_path_rate=0.1),
    "ffnet_2": dict(depths=(3, 3, 15, 3), dims=(88, 176, 352, 704), drop_path_rate=0.15),
    "ffnet_3": dict(depths=(4, 4, 22, 5), dims=(96, 192, 384, 768), ls_init_value=1e-6, drop_path_rate=0.35),
    "ffnet_4": dict(depths=(4, 4, 27, 3), dims=(128, 256, 512, 1024), ls_init_value=1e-6, drop_path_rate=0.4),
    # Tiny test variants (seconds on CPU): same block types as the real ones.
    "ffnet_test": dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), stem_chs=16, cm_kernel_sizes=(3, 3, 3, 3),
                       cm_small_kernel_sizes=(None,) * 4),
    "ffnet_test_ls": dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), stem_chs=16, ls_init_value=1e-6),
}
_DEFAULTS = dict(kernel_sizes=(3, 3, 7, 7), small_kernel_sizes=_T, cm_kernel_sizes=(7, 7, 7, 7),
                 cm_small_kernel_sizes=_T, mlp_ratio=3.0)


def _cfg(**kwargs) -> dict:
    return {**dict(url="", num_classes=1000, input_size=(3, 256, 256), pool_size=(8, 8), crop_pct=0.9,
                   interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                   first_conv="stem.0.conv", classifier="head", license="apache-2.0"), **kwargs}


default_cfgs = generate_default_cfgs({
    "ffnet_1": _cfg(), "ffnet_2": _cfg(), "ffnet_3": _cfg(crop_pct=0.95),
    "ffnet_4": _cfg(crop_pct=1.0, input_size=(3, 384, 384), pool_size=(12, 12)),
    "ffnet_test": _cfg(input_size=(3, 64, 64), pool_size=(2, 2)),
    "ffnet_test_ls": _cfg(input_size=(3, 64, 64), pool_size=(2, 2)),
})


def _create_ffnet(variant: str, pretrained: bool = False, **kwargs) -> FFNet:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    model_args = {**_DEFAULTS, **FFNET_VARIANTS[variant], **kwargs}
    return build_model_with_cfg(FFNet, variant, pretrained,
                                feature_cfg=dict(flatten_sequential=True, out_indices=out_indices), **model_args)


@register_model
def ffnet_1(pretrained: bool = False, **kwargs) -> FFNet:
    return _create_ffnet("ffnet_1", pretrained, **kwargs)


@register_model
def ffnet_2(pretrained: bool = False, **kwargs) -> FFNet:
    return _create_ffnet("ffnet_2", pretrained, **kwargs)


@register_model
def ffnet_3(pretrained: bool = False, **kwargs) -> FFNet:
    return _create_ffnet("ffnet_3", pretrained, **kwargs)


@register_model
def ffnet_4(pretrained: bool = False, **kwargs) -> FFNet:
    return _create_ffnet("ffnet_4", pretrained, **kwargs)


@register_model
def ffnet_test(pretrained: bool = False, **kwargs) -> FFNet:
    return _create_ffnet("ffnet_test", pretrained, **kwargs)


@register_model
def ffnet_test_ls(pretrained: bool = False, **kwargs) -> FFNet:
    return _create_ffnet("ffnet_test_ls", pretrained, **kwargs)
