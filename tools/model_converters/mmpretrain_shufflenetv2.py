"""Convert an mmpretrain ShuffleNetV2 checkpoint into an mmbackbones ShuffleNetV2 one.

    python tools/model_converters/mmpretrain_shufflenetv2.py \
        shufflenet_v2_batch1024_imagenet_20200812-5bf4721e.pth shufflenetv2_x1_0_mmpretrain.pth
"""
import sys

from mmbackbones.converters import convert_mmpretrain_shufflenetv2
from mmbackbones.converters.cli import run_converter, shufflenetv2_factory

if __name__ == '__main__':
    sys.exit(run_converter(None, description=__doc__, source='mmpretrain ShuffleNetV2',
                           convert=convert_mmpretrain_shufflenetv2, factory=shufflenetv2_factory))
