"""Convert an official VanillaNet checkpoint (train or deploy form) into an mmbackbones one.

    python tools/model_converters/vanillanet_official.py vanillanet_13.pth vanillanet_13.pth
    python tools/model_converters/vanillanet_official.py vanillanet_13_act_num_4_kd_pretrain.pth \
        checkpoints/vanillanet-13-act4.pth --arch vanillanet_13
    python tools/model_converters/vanillanet_official.py vanillanet_13.pth v13_deploy.pth --deploy

The weights come from the checkpoint's ``model_ema`` entry when it has one (what the official
detection code loads), else ``model`` / ``state_dict``; ``--weights`` picks one. Widths and
``act_num`` are read off the weights; the block strides are not in them, so they come from
``--arch`` or ``--strides``, or the named variant with these widths. A deploy-form source gives a
deploy-form result (``VanillaNet(deploy=True)``); ``--deploy`` re-parameterises a train-form
source on the way (the official weights are trained to act_learn = 1).
Source keys that no rule takes, or weights that do not fill the model exactly, are an error and
nothing is written (``--allow-partial`` writes anyway).
"""
import argparse
import importlib.util
import os.path as osp
import sys

if importlib.util.find_spec('mmbackbones') is None:  # running from a source checkout
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


from mmbackbones.converters import ConversionError, check_against_model  # noqa: E402
from mmbackbones.converters.cli import check_paths, refuse_nonfinite, write_checkpoint  # noqa: E402
from mmbackbones.converters.core import to_tensors  # noqa: E402
from mmbackbones.converters.vanillanet_official import (WEIGHT_KEYS, arch_from_state_dict,  # noqa: E402
                                                        convert_vanillanet_official,
                                                        is_deploy_form, select_weights)

SOURCE = 'official VanillaNet'


def convert(args: argparse.Namespace) -> dict:
    from mmbackbones.models import VanillaNet
    from mmbackbones.engine.checkpoint import CheckpointLoadError, load_checkpoint_weights_only
    try:
        ckpt = load_checkpoint_weights_only(args.src, map_location='cpu')
    except CheckpointLoadError as err:
        raise ConversionError(f'{args.src}: cannot be read as a weights-only checkpoint ({err}).')
    if not isinstance(ckpt, dict):
        raise ConversionError(f'{args.src}: expected a dict of weights, got {type(ckpt).__name__}.')
    state, entry = select_weights(ckpt, args.weights)
    result = convert_vanillanet_official(to_tensors(state)).check(SOURCE, args.allow_partial)
    spec, same_widths = arch_from_state_dict(result.state_dict, args.strides, args.arch)
    deploy = is_deploy_form(result.state_dict)
    model = VanillaNet(arch=spec, deploy=deploy, channels_last=False)
    report = check_against_model(result.state_dict, model, SOURCE, args.allow_partial)
    state_dict = result.state_dict
    if args.deploy and not deploy:
        model.load_state_dict(state_dict, strict=not args.allow_partial)
        model.eval().switch_to_deploy()
        state_dict, deploy = model.state_dict(), True
    refuse_nonfinite(state_dict, args.src)
    print(f'{SOURCE}: {len(result.state_dict)} tensors from the {entry!r} entry of {args.src} '
          f'({"deploy" if is_deploy_form(state) else "train"} form) -> {args.dst} '
          f'({"deploy" if deploy else "train"} form)')
    if result.dropped:
        print(f'  dropped {len(result.dropped)} classifier keys (e.g. {result.dropped[0]})')
    for name, keys in report.items():
        if keys:
            print(f'  {name}: {len(keys)} (e.g. {keys[0]})')
    if args.arch is None and args.strides is None:
        print(f'  strides of {same_widths[0] if same_widths else "?"} assumed (widths match '
              f'{", ".join(same_widths)}); pass --arch or --strides if that is wrong')
    backbone = dict(type='VanillaNet', arch=spec, deploy=deploy)
    write_checkpoint(dict(state_dict=state_dict, meta=dict(source=SOURCE, backbone=backbone)),
                     args.dst)
    shown = ', '.join(f'{k}={v!r}' for k, v in backbone.items())
    print(f"  use: backbone=dict({shown}, init_cfg=dict(type='Pretrained', "
          f"checkpoint='{args.dst}'))")
    return backbone


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='output mmbackbones checkpoint')
    parser.add_argument('--weights', choices=('auto', ) + WEIGHT_KEYS, default='auto',
                        help='checkpoint entry holding the weights (default: model_ema if present, '
                             'else model, else state_dict, else the file itself)')
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--arch', help='named variant the weights belong to, e.g. vanillanet_13')
    group.add_argument('--strides', type=int, nargs='+', help='block strides of a custom arch')
    parser.add_argument('--deploy', action='store_true',
                        help='write the deploy form (re-parameterise a train-form source)')
    parser.add_argument('--allow-partial', action='store_true',
                        help='write the result even when source keys are left unused or the '
                             'target model is not filled exactly')
    args = parser.parse_args(argv)
    check_paths(parser, args)
    try:
        convert(args)
    except (ConversionError, ValueError, OSError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
