"""vovnet-detectron2 (and CenterMask) VoVNet checkpoints -> mmbackbones ``VoVNet``.

Official keys name each conv unit ``<module>_<postfix>/<part>``; ours are mmcv ``ConvModule``
names. Detector checkpoints carry the backbone under ``backbone.bottom_up.`` (detectron2 FPN) or
``backbone.body.`` (maskrcnn-benchmark); only those keys are taken, the rest is dropped.
"""
from typing import Mapping

import torch

from .core import (ConversionResult, StateDict, add_num_batches_tracked, apply_rules,
                   strip_prefixes)

#: official conv-unit part -> our ConvModule path
_PARTS = {'conv': 'conv', 'norm': 'bn', 'dw_conv3x3': 'depthwise_conv.conv',
          'pw_conv1x1': 'pointwise_conv.conv', 'pw_norm': 'pointwise_conv.bn'}
_PART = '(' + '|'.join(_PARTS) + ')'
_BLOCK = r'stage(\d)\.OSA\d_(\d+)'


def _block(m) -> str:
    return f'stages.{int(m[1]) - 2}.blocks.{int(m[2]) - 1}'


RULES = [
    (rf'stem\.stem_(\d)/{_PART}\.(\w+)', lambda m: f'stem.{int(m[1]) - 1}.{_PARTS[m[2]]}.{m[3]}'),
    (rf'{_BLOCK}\.layers\.(\d+)\.OSA\d_\d+_\d+/{_PART}\.(\w+)',
     lambda m: f'{_block(m)}.layers.{m[3]}.{_PARTS[m[4]]}.{m[5]}'),
    (rf'{_BLOCK}\.concat\.OSA\d_\d+_concat/{_PART}\.(\w+)',
     lambda m: f'{_block(m)}.concat.{_PARTS[m[3]]}.{m[4]}'),
    (rf'{_BLOCK}\.conv_reduction\.OSA\d_\d+_reduction_0/{_PART}\.(\w+)',
     lambda m: f'{_block(m)}.reduction.{_PARTS[m[3]]}.{m[4]}'),
    (rf'{_BLOCK}\.ese\.fc\.(weight|bias)', lambda m: f'{_block(m)}.ese.fc.{m[3]}'),
]

#: where detector checkpoints keep the backbone
BACKBONE_PREFIXES = ('backbone.bottom_up.', 'backbone.body.', 'module.backbone.bottom_up.')


def convert_vovnet_official(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Convert a vovnet-detectron2 / CenterMask VoVNet state dict (backbone or whole detector)."""
    state: StateDict = dict(state_dict)
    dropped = []
    for prefix in BACKBONE_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            dropped = [k for k in state if not k.startswith(prefix)]
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    state = strip_prefixes(state, ('module.', ))
    result = apply_rules(state, RULES)
    result.dropped += dropped
    add_num_batches_tracked(result.state_dict)
    return result
