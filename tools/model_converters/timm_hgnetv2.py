"""Convert a timm hgnetv2_b0 ... b6 checkpoint into an mmbackbones HGNetV2 one.

    python tools/model_converters/timm_hgnetv2.py hgnetv2_b4.pth hgnetv2-l_timm.pth

b4/b5/b6 are RT-DETR's L/X/H; b0-b3 use the learnable affine blocks (``use_lab``).
"""
import sys

from mmbackbones.converters import convert_timm_hgnetv2
from mmbackbones.converters.cli import run_converter
from mmbackbones.converters.rtdetr_official import hgnetv2_factory

if __name__ == '__main__':
    sys.exit(run_converter(None, description=__doc__, source='timm HGNetV2',
                           convert=convert_timm_hgnetv2, factory=hgnetv2_factory))
