"""Convert a timm VovNet checkpoint (ese_vovnet*b, vovnet*a) into an mmbackbones VoVNet one.

    python tools/model_converters/timm_vovnet.py ese_vovnet39b.pth vovnet39_timm.pth

timm puts eSE on the last block of each stage only, so the result uses ``ese_layout='last'``;
``vovnet*a`` (VoVNetV1, no eSE) becomes ``identity=False``.
"""
import sys

from mmbackbones.converters import convert_timm_vovnet
from mmbackbones.converters.cli import run_converter, vovnet_factory

if __name__ == '__main__':
    sys.exit(run_converter(None, description=__doc__, source='timm VovNet',
                           convert=convert_timm_vovnet, factory=vovnet_factory))
