"""Convert a vovnet-detectron2 / CenterMask VoVNet checkpoint into an mmbackbones VoVNet one.

    python tools/model_converters/vovnet_official.py vovnet39_ese_detectron2.pth vovnet39.pth
"""
import sys

from mmbackbones.converters import convert_vovnet_official
from mmbackbones.converters.cli import run_converter, vovnet_factory

if __name__ == '__main__':
    sys.exit(run_converter(None, description=__doc__, source='vovnet-detectron2 VoVNet',
                           convert=convert_vovnet_official, factory=vovnet_factory))
