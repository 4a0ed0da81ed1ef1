"""Convert a timm resnet18d/34d/50d/101d checkpoint into an mmbackbones PResNet one.

    python tools/model_converters/timm_resnetd.py resnet50d.pth presnet50_timm.pth

For resnet18d/34d the projection PResNet keeps in stage 1's first block is filled with an
exact identity, so the result computes what the timm model does.
"""
import sys

from mmbackbones.converters import convert_timm_resnetd
from mmbackbones.converters.cli import run_converter
from mmbackbones.converters.rtdetr_official import presnet_factory

if __name__ == '__main__':
    sys.exit(run_converter(None, description=__doc__, source='timm ResNet-D',
                           convert=convert_timm_resnetd, factory=presnet_factory))
