"""Convert an official RT-DETR HGNetv2 checkpoint into an mmbackbones HGNetV2 one.

    python tools/model_converters/rtdetr_hgnetv2.py \
        PPHGNetV2_L_ssld_pretrained_from_paddle.pth hgnetv2-l_rtdetr.pth

Takes RT-DETR's PaddleClas-converted ImageNet weights, or a whole RT-DETR detector checkpoint
(its ``backbone.`` keys). The arch (L/X/H, or a custom dict) is read off the weights.
"""
import sys

from mmbackbones.converters import convert_rtdetr_hgnetv2
from mmbackbones.converters.cli import run_converter
from mmbackbones.converters.rtdetr_official import hgnetv2_factory

if __name__ == '__main__':
    sys.exit(run_converter(None, description=__doc__, source='RT-DETR HGNetv2',
                           convert=convert_rtdetr_hgnetv2, factory=hgnetv2_factory))
