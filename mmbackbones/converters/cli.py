"""The command line shared by ``tools/model_converters/*``.

Every converter CLI checks its paths first (a source that is missing or a directory, a
destination that is a directory or lies in a missing or unwritable directory: exit 2 with the
argument, the value and what to do), reads the source with ``weights_only=True``, converts,
rebuilds the target backbone from the converted weights and checks that they fill it exactly,
refuses weights holding NaN or Inf (exit 1, naming the tensors), and only then writes the output
with :func:`mmbackbones.fileio.atomic_save` (an interrupted or refused conversion leaves no file
behind).
"""
import argparse
import glob
import os
import sys
from typing import Callable, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..fileio import atomic_save
from .core import (ConversionError, ConversionResult, StateDict, check_against_model,
                   load_source_checkpoint)

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


#: checkpoint file endings, for the hint when a directory is given as the source
_CHECKPOINT_ENDINGS = ('.pth', '.pt', '.pkl', '.bin', '.ckpt')


def source_problem(src: str) -> Optional[str]:
    """Why ``src`` cannot be a source checkpoint (a sentence for ``parser.error``), or None."""
    if os.path.isdir(src):
        inside = sorted(p for p in glob.glob(os.path.join(glob.escape(src), '*'))
                        if p.endswith(_CHECKPOINT_ENDINGS) and os.path.isfile(p))
        hint = f', e.g. {inside[0]}' if inside else ''
        return (f'argument src: {src!r} is a directory, not a checkpoint file; pass the '
                f'checkpoint file itself{hint}')
    if not os.path.exists(src):
        return (f'argument src: {src!r} does not exist; pass the path of the checkpoint file '
                f'to convert')
    if not os.access(src, os.R_OK):
        return f'argument src: {src!r} is not readable (permission denied)'
    return None


def destination_problem(dst: str) -> Optional[str]:
    """Why the converted checkpoint cannot be written to ``dst``, or None."""
    if os.path.isdir(dst):
        return (f'argument dst: {dst!r} is a directory; pass the output file name, e.g. '
                f'{os.path.join(dst, "converted.pth")}')
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.exists(parent):
        return (f'argument dst: the directory {parent!r} does not exist; create it first '
                f'(mkdir -p {parent}) or choose another dst')
    if not os.path.isdir(parent):
        return f'argument dst: {parent!r} is not a directory; choose another dst'
    if not os.access(parent, os.W_OK | os.X_OK):
        return (f'argument dst: the directory {parent!r} is not writable; choose a dst in a '
                f'directory you can write to')
    return None


def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a source or destination that cannot work before anything is loaded (exit 2)."""
    problem = source_problem(args.src) or destination_problem(args.dst)
    if problem is not None:
        parser.error(problem)


def nonfinite_keys(state_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """Keys of the floating-point tensors holding NaN or Inf."""
    return [k for k, v in state_dict.items()
            if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def refuse_nonfinite(state_dict: Mapping[str, torch.Tensor], src: str) -> None:
    """A checkpoint with NaN or Inf weights (a diverged run) is an error, never written."""
    bad = nonfinite_keys(state_dict)
    if bad:
        shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
        raise ConversionError(
            f'{src}: the converted weights hold NaN or Inf in {len(bad)} of {len(state_dict)} '
            f'tensors ({shown}); the checkpoint is damaged (saved after training diverged?). '
            f'Convert a checkpoint with finite weights; nothing was written.')


def write_checkpoint(obj: object, dst: str) -> None:
    """:func:`atomic_save`, with an error a user can act on when the file cannot be written."""
    try:
        atomic_save(obj, dst)
    except OSError as err:
        reason = err.strerror or err
        raise ConversionError(f'argument dst: cannot write {dst!r} ({reason}); choose a dst in a '
                              f'directory you can write to, with space left.') from err


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
    check_paths(parser, args)
    try:
        weights = load(args.src, args) if load is not None else load_source_checkpoint(args.src)
        result = convert(weights).check(source, args.allow_partial)
        model, backbone_cfg = factory(result.state_dict)
        report = check_against_model(result.state_dict, model, source, args.allow_partial)
        refuse_nonfinite(result.state_dict, args.src)
        write_checkpoint(dict(state_dict=result.state_dict,
                              meta=dict(source=source, backbone=backbone_cfg)), args.dst)
    except (ConversionError, ValueError, OSError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
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
