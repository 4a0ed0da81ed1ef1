# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""RT-DETR for mmdet: ``RTDETR`` detector, ``HybridEncoder`` neck, ``RTDETRHead`` and the
multi-scale batch augment ``RTDETRBatchRandomResize``."""
from .batch_resize import RTDETR_SIZES, RTDETRBatchRandomResize
from .denoising import ContrastiveDenoising
from .detector import RTDETR
from .hybrid_encoder import CSPRepLayer, HybridEncoder, RepVGGBlock, sincos_position_embedding
from .losses import RTDETRVarifocalLoss
from .rtdetr_head import RTDETRHead

__all__ = ['RTDETR', 'HybridEncoder', 'RTDETRHead', 'RTDETRVarifocalLoss',
           'RTDETRBatchRandomResize', 'RTDETR_SIZES', 'ContrastiveDenoising', 'CSPRepLayer',
           'RepVGGBlock', 'sincos_position_embedding']
