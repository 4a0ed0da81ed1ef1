"""Convert a torchvision ShuffleNetV2 checkpoint into an mmbackbones ShuffleNetV2 one.

    python tools/model_converters/torchvision_shufflenetv2.py shufflenetv2_x1.pth shufflenetv2_x1_0.pth
"""
import sys

from mmbackbones.converters import convert_torchvision_shufflenetv2
from mmbackbones.converters.cli import run_converter, shufflenetv2_factory

if __name__ == '__main__':
    sys.exit(run_converter(None, description=__doc__, source='torchvision ShuffleNetV2',
                           convert=convert_torchvision_shufflenetv2, factory=shufflenetv2_factory))
