"""Convert a vovnet-detectron2 / CenterMask VoVNet checkpoint into an mmbackbones VoVNet one.

    python tools/model_converters/vovnet_official.py vovnet39_ese_detectron2.pth vovnet39.pth
"""
import sys

from mmbackbones.converters import convert_vovnet_official
from mmbackbones.converters.cli import run_converter
from mmbackbones.models import VoVNet


def build(state_dict):
    arch, layout = VoVNet.arch_from_state_dict(state_dict, identity=True)
    cfg = dict(type='VoVNet', arch=arch, ese_layout=layout)
    return VoVNet(arch=arch, ese_layout=layout), cfg


if __name__ == '__main__':
    sys.exit(run_converter(None, description=__doc__, source='vovnet-detectron2 VoVNet',
                           convert=convert_vovnet_official, factory=build))
