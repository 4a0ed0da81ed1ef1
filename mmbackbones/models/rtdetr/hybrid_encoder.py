# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""RT-DETR's hybrid encoder: AIFI (intra-scale attention) + CCFM (cross-scale CSP fusion)."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer
from mmdet.models.layers.transformer import DetrTransformerEncoder
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import nn

from ..layers.conv_fusion import fuse_conv_bn
from ..layers.conv_module import FoldableConvModule

ACTIVATIONS = ('silu', 'relu', 'gelu', 'leaky_relu')
_ACT_CFG = dict(silu=dict(type='SiLU'), relu=dict(type='ReLU'), gelu=dict(type='GELU'),
                leaky_relu=dict(type='LeakyReLU'))


def act_cfg_of(owner: str, act: Optional[str]) -> Optional[dict]:
    """mmcv activation config of an RT-DETR activation name (None: no activation)."""
    if act is None:
        return None
    if not isinstance(act, str) or act.lower() not in _ACT_CFG:
        raise ValueError(f'{owner}: act={act!r} is unknown; choose one of '
                         f'{", ".join(ACTIVATIONS)} or None.')
    return dict(_ACT_CFG[act.lower()])


def sincos_position_embedding(height: int, width: int, embed_dims: int,
                              temperature: float = 10000.) -> torch.Tensor:
    """RT-DETR's fixed 2D sin-cos embedding, ``(1, height * width, embed_dims)``.

    Token ``k`` of the row-major (h, w) flattened map gets column coordinate ``k // height`` and
    row coordinate ``k % height``: the official code enumerates the grid w-major, which for
    non-square maps is not the token's own (x, y). Checkpoints were trained with it, so we keep it.
    """
    if embed_dims % 4 != 0:
        raise ValueError(f'sincos_position_embedding: embed_dims={embed_dims} must be divisible '
                         f'by 4 (sin and cos of two coordinates).')
    quarter = embed_dims // 4
    omega = 1. / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    index = torch.arange(height * width, dtype=torch.float32)
    col = torch.div(index, height, rounding_mode='floor')
    row = index - col * height
    col_angle = col[:, None] * omega[None]
    row_angle = row[:, None] * omega[None]
    embed = torch.cat([col_angle.sin(), col_angle.cos(), row_angle.sin(), row_angle.cos()], 1)
    return embed[None]


class RepVGGBlock(nn.Module):
    """3x3 conv + BN in parallel with 1x1 conv + BN, summed, then the activation.

    ``switch_to_deploy()`` folds both branches into one 3x3 conv with a bias.
    """

    def __init__(self, channels: int, act_cfg: Optional[dict] = dict(type='SiLU'),
                 norm_cfg: dict = dict(type='BN')) -> None:
        super().__init__()
        self.channels = channels
        self.conv1 = FoldableConvModule(channels, channels, 3, padding=1, bias=False,
                                        norm_cfg=norm_cfg, act_cfg=None)
        self.conv2 = FoldableConvModule(channels, channels, 1, bias=False, norm_cfg=norm_cfg,
                                        act_cfg=None)
        self.act = build_activation_layer(act_cfg) if act_cfg else nn.Identity()
        self.conv: Optional[nn.Conv2d] = None  # the deploy form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            return self.act(self.conv(x))
        return self.act(self.conv1(x) + self.conv2(x))

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        if self.conv is not None:
            return
        w3, b3 = fuse_conv_bn(self.conv1.conv.weight, None, self.conv1.bn)
        w1, b1 = fuse_conv_bn(self.conv2.conv.weight, None, self.conv2.bn)
        conv = nn.Conv2d(self.channels, self.channels, 3, padding=1, bias=True).to(w3)
        conv.weight.copy_(w3 + F.pad(w1, [1, 1, 1, 1]))
        conv.bias.copy_(b3 + b1)
        self.conv = conv
        del self.conv1, self.conv2


class CSPRepLayer(nn.Module):
    """Two 1x1 branches; one runs ``num_blocks`` RepVGG blocks; their sum goes through a 1x1
    conv to ``out_channels`` (identity when the hidden width already equals it)."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 3,
                 expansion: float = 1.0, act_cfg: Optional[dict] = dict(type='SiLU'),
                 norm_cfg: dict = dict(type='BN')) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        kw = dict(bias=False, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.conv1 = FoldableConvModule(in_channels, hidden, 1, **kw)
        self.conv2 = FoldableConvModule(in_channels, hidden, 1, **kw)
        self.bottlenecks = nn.Sequential(*[RepVGGBlock(hidden, act_cfg, norm_cfg)
                                           for _ in range(num_blocks)])
        self.conv3 = (FoldableConvModule(hidden, out_channels, 1, **kw)
                      if hidden != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


@MODELS.register_module()
class HybridEncoder(BaseModule):
    """RT-DETR's hybrid encoder neck.

    Every input level is projected to ``hidden_dim`` (1x1 conv + BN). AIFI: the levels in
    ``use_encoder_idx`` (default the stride-32 one) go through ``num_encoder_layers`` post-norm
    transformer encoder layers with a fixed 2D sin-cos position embedding. CCFM: a top-down pass
    (1x1 lateral conv, 2x nearest upsampling, concat, CSPRepLayer) and a bottom-up pass (3x3
    stride-2 conv, concat, CSPRepLayer) fuse the levels.

    Args:
        in_channels (Sequence[int]): Channels of the backbone levels. Default: (512, 1024, 2048).
        feat_strides (Sequence[int]): Their strides. Default: (8, 16, 32).
        hidden_dim (int): Channels of every output level. Default: 256.
        nhead (int): Attention heads of AIFI. Default: 8.
        dim_feedforward (int): FFN width of AIFI. Default: 1024.
        dropout (float): Dropout of AIFI. Default: 0.0.
        enc_act (str): FFN activation of AIFI. Default: 'gelu'.
        use_encoder_idx (Sequence[int]): Levels AIFI runs on. Default: (2,).
        num_encoder_layers (int): AIFI layers per level (0: no AIFI). Default: 1.
        pe_temperature (float): Temperature of the position embedding. Default: 10000.
        expansion (float): Hidden width ratio of the CSPRepLayers. Default: 1.0.
        depth_mult (float): RepVGG blocks per CSPRepLayer are ``round(3 * depth_mult)``.
            Default: 1.0.
        act (str): Activation of the CCFM convs. Default: 'silu'.
        norm_cfg (dict): Norm of every conv. Default: BN.
        init_cfg (dict, optional): mmengine init config.

    Example:
        >>> import torch
        >>> neck = HybridEncoder(in_channels=[16, 32, 64], hidden_dim=32, nhead=4,
        ...                      dim_feedforward=64).eval()
        >>> feats = [torch.rand(1, c, 32 // 2 ** i, 24 // 2 ** i)
        ...          for i, c in enumerate([16, 32, 64])]
        >>> [tuple(o.shape) for o in neck(feats)]
        [(1, 32, 32, 24), (1, 32, 16, 12), (1, 32, 8, 6)]
    """

    def __init__(self, in_channels: Sequence[int] = (512, 1024, 2048),
                 feat_strides: Sequence[int] = (8, 16, 32), hidden_dim: int = 256,
                 nhead: int = 8, dim_feedforward: int = 1024, dropout: float = 0.0,
                 enc_act: str = 'gelu', use_encoder_idx: Sequence[int] = (2, ),
                 num_encoder_layers: int = 1, pe_temperature: float = 10000.,
                 expansion: float = 1.0, depth_mult: float = 1.0, act: Optional[str] = 'silu',
                 norm_cfg: dict = dict(type='BN'), init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        in_channels, feat_strides = list(in_channels), list(feat_strides)
        if len(in_channels) < 1 or len(feat_strides) != len(in_channels):
            raise ValueError(f'HybridEncoder: in_channels={in_channels} and feat_strides='
                             f'{feat_strides} must be non-empty and of the same length (one '
                             f'entry per backbone level).')
        bad = [i for i in use_encoder_idx if not 0 <= i < len(in_channels)]
        if bad or len(set(use_encoder_idx)) != len(use_encoder_idx):
            raise ValueError(f'HybridEncoder: use_encoder_idx={list(use_encoder_idx)} must be '
                             f'unique level indices in 0..{len(in_channels) - 1} (there are '
                             f'{len(in_channels)} input levels).')
        if hidden_dim % nhead != 0:
            raise ValueError(f'HybridEncoder: hidden_dim={hidden_dim} is not divisible by '
                             f'nhead={nhead}; choose nhead among the divisors of hidden_dim.')
        if hidden_dim % 4 != 0:
            raise ValueError(f'HybridEncoder: hidden_dim={hidden_dim} must be divisible by 4 '
                             f'(the 2D sin-cos position embedding).')
        act_cfg = act_cfg_of('HybridEncoder', act)
        ffn_act = act_cfg_of('HybridEncoder (enc_act)', enc_act)
        self.in_channels = in_channels
        self.feat_strides = feat_strides
        self.hidden_dim = hidden_dim
        self.use_encoder_idx = list(use_encoder_idx)
        self.num_encoder_layers = num_encoder_layers
        self.pe_temperature = pe_temperature
        self.out_channels = [hidden_dim] * len(in_channels)
        self.out_strides = feat_strides

        self.input_proj = nn.ModuleList([
            FoldableConvModule(c, hidden_dim, 1, bias=False, norm_cfg=norm_cfg, act_cfg=None)
            for c in in_channels])
        layer_cfg = dict(
            self_attn_cfg=dict(embed_dims=hidden_dim, num_heads=nhead, attn_drop=dropout,
                               dropout_layer=dict(type='Dropout', drop_prob=dropout),
                               batch_first=True),
            ffn_cfg=dict(embed_dims=hidden_dim, feedforward_channels=dim_feedforward,
                         num_fcs=2, ffn_drop=dropout, act_cfg=ffn_act))
        self.encoder = nn.ModuleList([
            DetrTransformerEncoder(num_layers=num_encoder_layers, layer_cfg=layer_cfg)
            for _ in self.use_encoder_idx]) if num_encoder_layers > 0 else nn.ModuleList()

        num_blocks = round(3 * depth_mult)
        kw = dict(bias=False, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.lateral_convs = nn.ModuleList()
        self.fpn_blocks = nn.ModuleList()
        self.downsample_convs = nn.ModuleList()
        self.pan_blocks = nn.ModuleList()
        for _ in range(len(in_channels) - 1):
            self.lateral_convs.append(FoldableConvModule(hidden_dim, hidden_dim, 1, **kw))
            self.fpn_blocks.append(CSPRepLayer(hidden_dim * 2, hidden_dim, num_blocks, expansion,
                                               act_cfg, norm_cfg))
            self.downsample_convs.append(FoldableConvModule(hidden_dim, hidden_dim, 3,
                                                            stride=2, padding=1, **kw))
            self.pan_blocks.append(CSPRepLayer(hidden_dim * 2, hidden_dim, num_blocks, expansion,
                                               act_cfg, norm_cfg))

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        if len(feats) != len(self.in_channels):
            raise ValueError(f'HybridEncoder: got {len(feats)} feature maps, configured for '
                             f'{len(self.in_channels)} (in_channels={self.in_channels}); match '
                             f'the backbone out_indices.')
        proj = [conv(x) for conv, x in zip(self.input_proj, feats)]
        for encoder, idx in zip(self.encoder, self.use_encoder_idx):
            n, c, h, w = proj[idx].shape
            tokens = proj[idx].flatten(2).transpose(1, 2)
            pos = sincos_position_embedding(h, w, c, self.pe_temperature).to(tokens)
            memory = encoder(tokens, query_pos=pos, key_padding_mask=None)
            proj[idx] = memory.transpose(1, 2).reshape(n, c, h, w).contiguous()

        # top-down: from the coarsest level, keeping the lateral-conv output as the new top
        top_down = [proj[-1]]
        for k, idx in enumerate(range(len(proj) - 1, 0, -1)):
            high = self.lateral_convs[k](top_down[0])
            top_down[0] = high
            low = proj[idx - 1]
            if low.shape[-2:] == (2 * high.shape[-2], 2 * high.shape[-1]):
                up = F.interpolate(high, scale_factor=2., mode='nearest')
            else:
                up = F.interpolate(high, size=low.shape[-2:], mode='bilinear')
            top_down.insert(0, self.fpn_blocks[k](torch.cat([up, low], 1)))

        outs: List[torch.Tensor] = [top_down[0]]
        for k in range(len(proj) - 1):
            down = self.downsample_convs[k](outs[-1])
            outs.append(self.pan_blocks[k](torch.cat([down, top_down[k + 1]], 1)))
        return tuple(outs)

    def switch_to_deploy(self) -> None:
        """Fold every RepVGG block into a single 3x3 conv (same outputs in eval mode)."""
        for module in [m for m in self.modules() if isinstance(m, RepVGGBlock)]:
            module.switch_to_deploy()
