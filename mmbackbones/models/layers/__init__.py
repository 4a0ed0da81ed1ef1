from .activation_checkpoint import maybe_checkpoint
from .conv_fusion import conv_from_weights, fuse_conv_bn, is_batch_norm, merge_conv_then_pointwise
from .conv_module import FoldableConvModule, FoldableDepthwiseSeparableConvModule, bn_folding
from .csp import SPPF, C2f, C2fBottleneck, Focus, yolo_conv
from .frozen_batch_norm import FrozenBatchNorm2d, check_freeze_norm, freeze_batch_norm
from .hg_block import HGBlock, HGConvModule, LearnableAffine, LightConvModule
from .moga import (ChannelAggregationFFN, ElementScale, MogaBlock, MultiOrderDWConv,
                   MultiOrderGatedAggregation)
from .osa import OSAModule, vovnet_conv3x3
from .plugin import PluginSequence, apply_plugins
from .series_activation import SeriesActivation
from .shuffle import ShuffleUnit, channel_shuffle
from .squeeze_excite import EffectiveSE

__all__ = ['maybe_checkpoint', 'OSAModule', 'vovnet_conv3x3', 'PluginSequence', 'apply_plugins',
           'EffectiveSE', 'ShuffleUnit', 'channel_shuffle',
           'SPPF', 'C2f', 'C2fBottleneck', 'Focus', 'yolo_conv',
           'SeriesActivation', 'FoldableConvModule', 'FoldableDepthwiseSeparableConvModule',
           'bn_folding', 'is_batch_norm', 'fuse_conv_bn', 'merge_conv_then_pointwise', 'conv_from_weights',
           'ElementScale', 'MultiOrderDWConv', 'MultiOrderGatedAggregation',
           'ChannelAggregationFFN', 'MogaBlock',
           'FrozenBatchNorm2d', 'check_freeze_norm', 'freeze_batch_norm',
           'HGBlock', 'HGConvModule', 'LearnableAffine', 'LightConvModule']
