"""The command line shared by ``tools/model_converters/*``.

Every converter CLI reads the source with ``weights_only=True``, converts, rebuilds the target
backbone from the converted weights and checks that they fill it exactly, and only then writes
the output (atomically: an interrupted or refused conversion leaves no file behind).
"""
import argparse
import os
import sys
import tempfile
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from .core import ConversionError, ConversionResult, StateDict, check_against_model, load_source_checkpoint

#: (converted state dict) -> (model built for it, backbone config for a detector config)
ModelFactory = Callable[[StateDict], Tuple[nn.Module, dict]]


def vovnet_factory(state_dict: StateDict) -> Tuple[nn.Module, dict]:
    """A VoVNet for converted weights: arch and eSE layout read off the weights. VoVNetV2
    checkpoints (official and timm ``*b``) carry eSE and use the identity shortcut; VoVNetV1
    (timm ``*a``) has neither."""
    from mmbackbones.models import VoVNet
    has_ese = any(k.endswith('.ese.fc.weight') for k in state_dict)
    arch, layout = VoVNet.arch_from_state_dict(state_dict, identity=has_ese)
    return VoVNet(arch=arch, ese_layout=layout), dict(type='VoVNet', arch=arch, ese_layout=layout)


def shufflenetv2_factory(state_dict: StateDict) -> Tuple[nn.Module, dict]:
    """A ShuffleNetV2 for converted weights: the widths are read off the weights."""
    from mmbackbones.models import ShuffleNetV2
    width = [int(state_dict[f'stages.{i}.0.branch1.1.conv.weight'].shape[0]) * 2 for i in range(3)]
    arch = dict(stem_channels=int(state_dict['stem.0.conv.weight'].shape[0]),
                stage_channels=width,
                conv5_channels=int(state_dict['stages.3.0.conv.weight'].shape[0]),
                stage_blocks=[1 + max(int(k.split('.')[2]) for k in state_dict
                                      if k.startswith(f'stages.{i}.')) for i in range(3)])
    return ShuffleNetV2(arch=arch), dict(type='ShuffleNetV2', arch=arch)


def save_atomic(obj: object, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-', suffix='.pth')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run_converter(argv: Optional[List[str]], *, description: str, source: str,
                  convert: Callable[[StateDict], ConversionResult], factory: ModelFactory,
                  load: Optional[Callable[[str, argparse.Namespace], StateDict]] = None,
                  add_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None
                  ) -> int:
    """``load(path, args)`` replaces the weights-only reader for sources that need another
    (ultralytics' pickled models); ``add_arguments(parser)`` adds its flags."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', help='source checkpoint (.pth / .pkl / .bin)')
    parser.add_argument('dst', help='output mmbackbones checkpoint')
    parser.add_argument('--allow-partial', action='store_true',
                        help='write the result even when source keys are left unused or the '
                             'target model is not filled exactly')
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        weights = load(args.src, args) if load is not None else load_source_checkpoint(args.src)
        result = convert(weights).check(source, args.allow_partial)
        model, backbone_cfg = factory(result.state_dict)
        report = check_against_model(result.state_dict, model, source, args.allow_partial)
    except (ConversionError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    save_atomic(dict(state_dict=result.state_dict, meta=dict(source=source, backbone=backbone_cfg)),
                args.dst)
    print(f'{source}: converted {len(result.state_dict)} tensors from {args.src} -> {args.dst}')
    if result.dropped:
        print(f'  dropped {len(result.dropped)} non-backbone keys (e.g. {result.dropped[0]})')
    for name, keys in report.items():
        if keys:
            print(f'  {name}: {len(keys)} (e.g. {keys[0]})')
    shown = ', '.join(f'{k}={v!r}' for k, v in backbone_cfg.items())
    print(f"  use: backbone=dict({shown}, init_cfg=dict(type='Pretrained', "
          f"checkpoint='{args.dst}'))")
    return 0
