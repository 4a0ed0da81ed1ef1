# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""The RT-DETR detector: backbone, ``HybridEncoder`` neck, ``RTDETRHead``."""
from typing import Optional

from mmdet.models.detectors import SingleStageDetector
from mmdet.registry import MODELS


@MODELS.register_module()
class RTDETR(SingleStageDetector):
    """RT-DETR (Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection").

    A single-stage detector in mmdet's sense: ``extract_feat`` runs the backbone and the
    hybrid encoder, the head does query selection, decoding, losses and post-processing. The
    channels of backbone, neck and head are checked against each other when it is built.

    ``switch_to_deploy()`` folds the neck's RepVGG blocks into single convs (eval outputs
    unchanged).
    """

    def __init__(self, backbone: dict, neck: dict, bbox_head: dict,
                 train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(backbone=backbone, neck=neck, bbox_head=bbox_head, train_cfg=train_cfg,
                         test_cfg=test_cfg, data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        produced = getattr(self.backbone, 'out_channels', None)
        expected = getattr(self.neck, 'in_channels', None)
        if produced is not None and expected is not None and list(produced) != list(expected):
            raise ValueError(f'RTDETR: neck in_channels={list(expected)} disagrees with the '
                             f'backbone {type(self.backbone).__name__}, which returns channels '
                             f'{list(produced)}; set model.neck.in_channels={list(produced)} or '
                             f'change the backbone out_indices.')
        neck_out = getattr(self.neck, 'out_channels', None)
        if neck_out is not None and list(neck_out) != list(self.bbox_head.in_channels):
            raise ValueError(f'RTDETR: bbox_head in_channels={self.bbox_head.in_channels} '
                             f'disagrees with the neck outputs {list(neck_out)}; set '
                             f'model.bbox_head.in_channels={list(neck_out)}.')

    def switch_to_deploy(self) -> None:
        """Fold the RepVGG blocks of the neck into single 3x3 convs."""
        if hasattr(self.neck, 'switch_to_deploy'):
            self.neck.switch_to_deploy()
