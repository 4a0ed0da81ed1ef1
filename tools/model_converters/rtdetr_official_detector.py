# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Convert an official RT-DETR detector checkpoint into an mmbackbones ``RTDETR`` one.

    python tools/model_converters/rtdetr_official_detector.py \
        rtdetr_r50vd_6x_coco_from_paddle.pth rtdetr_r50vd_6x_coco_mmdet.pth

Reads the release file weights-only (``ema.module``, else ``model``), converts backbone
(PResNet / HGNetv2), hybrid encoder and decoder, rebuilds the detector from the weights and
writes the result only when it fills that detector exactly. The model config it was built from
is stored under ``meta.model`` and printed.
"""
import sys

from mmbackbones.converters.rtdetr_detector import main

if __name__ == '__main__':
    sys.exit(main())
