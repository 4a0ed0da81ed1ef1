"""Convert an official RT-DETR PResNet checkpoint into an mmbackbones PResNet one.

    python tools/model_converters/rtdetr_presnet.py \
        ResNet50_vd_ssld_v2_pretrained_from_paddle.pth presnet50_rtdetr.pth

Takes RT-DETR's PaddleClas-converted ImageNet weights, or a whole RT-DETR detector checkpoint
(its ``backbone.`` keys). The depth is read off the weights.
"""
import sys

from mmbackbones.converters import convert_rtdetr_presnet
from mmbackbones.converters.cli import run_converter
from mmbackbones.converters.rtdetr_official import presnet_factory

if __name__ == '__main__':
    sys.exit(run_converter(None, description=__doc__, source='RT-DETR PResNet',
                           convert=convert_rtdetr_presnet, factory=presnet_factory))
