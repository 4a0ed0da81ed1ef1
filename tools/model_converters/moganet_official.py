"""Convert an official MogaNet checkpoint (Westlake-AI/MogaNet) into an mmbackbones MogaNet one.

    python tools/model_converters/moganet_official.py moganet_xtiny_sz224_8xbs128_ep300.pth.tar \
        checkpoints/moganet_xtiny_official.pth

ImageNet checkpoints (``state_dict`` or ``model`` wrapper; the classifier head is dropped) and
detectors trained with the official mmdet configs (``backbone.`` keys) are accepted.
"""
import sys

from mmbackbones.converters import convert_moganet_official
from mmbackbones.converters.cli import run_converter
from mmbackbones.converters.moganet_official import moganet_factory

if __name__ == '__main__':
    sys.exit(run_converter(None, description=__doc__, source='official MogaNet',
                           convert=convert_moganet_official, factory=moganet_factory))
