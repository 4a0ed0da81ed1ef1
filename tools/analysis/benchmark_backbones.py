"""Benchmark mmbackbones backbones against their peer implementation.

For every arch: eval forward latency and one train step (forward + backward), ours vs the peer
(timm for VoVNet), in one process, alternating runs, on the same input and thread count, with
identical weights. Prints a markdown table with the ratio ours / peer (< 1 means we are faster).

    python tools/analysis/benchmark_backbones.py --family vovnet --threads 2 \
        --shape 1 3 512 512 --shape 2 3 512 512
"""
import argparse
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

import mmbackbones  # noqa: F401
from mmbackbones.analysis import time_pair

# ---------------------------------------------------------------- families: (ours, peer) builders


def _vovnet_cases(layout: Dict[str, bool]
                  ) -> Dict[str, Callable[[], Tuple[nn.Module, nn.Module]]]:
    import timm
    from timm.models.vovnet import VovNet, model_cfgs

    from mmbackbones.converters import convert_timm_vovnet
    from mmbackbones.models import VoVNet

    pairs = [('V-19-slim-dw-eSE', 'ese_vovnet19b_slim_dw'), ('V-19-dw-eSE', 'ese_vovnet19b_dw'),
             ('V-19-slim-eSE', 'ese_vovnet19b_slim'), ('V-19-eSE', 'ese_vovnet19b'),
             ('V-39-eSE', 'ese_vovnet39b'), ('V-57-eSE', 'ese_vovnet57b'),
             ('V-99-eSE', 'ese_vovnet99b')]

    def make(arch: str, name: str):
        def build():
            if name in timm.list_models():
                peer = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4))
            else:  # ese_vovnet19b has a config but no registered entrypoint
                from timm.models._features import FeatureListNet
                peer = FeatureListNet(VovNet(cfg=model_cfgs[name]), out_indices=(1, 2, 3, 4),
                                      flatten_sequential=True)
            ours = VoVNet(arch=arch, ese_layout='last', norm_eval=False, **layout)
            ours.load_state_dict(convert_timm_vovnet(peer.state_dict()).check('timm').state_dict)
            return ours, peer
        return build

    return {arch: make(arch, name) for arch, name in pairs}


def _shufflenetv2_cases(layout: Dict[str, bool]
                        ) -> Dict[str, Callable[[], Tuple[nn.Module, nn.Module]]]:
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    from mmbackbones.converters import convert_torchvision_shufflenetv2
    from mmbackbones.models import ShuffleNetV2

    def make(widen_factor: float, name: str):
        def build():
            full = getattr(torchvision.models, name)()
            peer = create_feature_extractor(full, ['stage2', 'stage3', 'stage4', 'conv5'])
            ours = ShuffleNetV2(widen_factor=widen_factor, out_indices=(0, 1, 2, 3), **layout)
            ours.load_state_dict(
                convert_torchvision_shufflenetv2(full.state_dict()).check('tv').state_dict)
            return ours, _ListOutputs(peer)
        return build

    return {f'x{w}': make(w, f'shufflenet_v2_x{str(w).replace(".", "_")}')
            for w in (0.5, 1.0, 1.5, 2.0)}


class _ListOutputs(nn.Module):
    """torchvision's feature extractor returns a dict; give the timing loop a list."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return list(self.model(x).values())


FAMILIES = {'vovnet': (_vovnet_cases, 'timm'), 'shufflenetv2': (_shufflenetv2_cases, 'torchvision')}


def _train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step():
        outs = model(x)
        sum(o.float().mean() for o in outs).backward()
        for p in model.parameters():
            p.grad = None
    return step


def _eval_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step():
        with torch.no_grad():
            model(x)
    return step


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--family', choices=sorted(FAMILIES), default='vovnet')
    parser.add_argument('--arch', nargs='*', help='subset of archs (default: all)')
    parser.add_argument('--shape', nargs=4, type=int, action='append',
                        help='input N C H W (repeatable; default 1 3 512 512 and 2 3 512 512)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--modes', nargs='+', choices=['eval', 'train'], default=['eval', 'train'])
    parser.add_argument('--layout', choices=['default', 'contiguous'], default='default',
                        help="ours with its default memory layout, or forced to NCHW-contiguous "
                             "(channels_last=False: the same kernels as the peer)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = args.shape or [[1, 3, 512, 512], [2, 3, 512, 512]]
    builders, peer_name = FAMILIES[args.family]
    cases = builders({} if args.layout == 'default' else dict(channels_last=False))
    if args.arch:
        unknown = [a for a in args.arch if a not in cases]
        if unknown:
            parser.error(f'--arch {unknown} unknown for {args.family}; choose from {list(cases)}')
        cases = {a: cases[a] for a in args.arch}

    layout = 'its default layout' if args.layout == 'default' else 'channels_last=False'
    print(f'torch {torch.__version__}, {args.threads} threads, {args.rounds} alternating rounds, '
          f'ours with {layout}; ratio = ours / {peer_name} (median of per-round ratios)\n')
    print('| arch | input | mode | ours ms | peer ms | ratio |')
    print('|---|---|---|---|---|---|')
    for arch, build in cases.items():
        ours, peer = build()
        for shape in shapes:
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
            for mode in args.modes:
                if mode == 'eval':
                    ours.eval(), peer.eval()
                    t = time_pair(_eval_step(ours, x), _eval_step(peer, x), rounds=args.rounds,
                                  warmup=args.warmup)
                else:
                    ours.train(), peer.train()
                    t = time_pair(_train_step(ours, x), _train_step(peer, x), rounds=args.rounds,
                                  warmup=args.warmup)
                print(f'| {arch} | {"x".join(map(str, shape))} | {mode} | {t.ours_ms:.1f} | '
                      f'{t.peer_ms:.1f} | {t.ratio:.3f} |', flush=True)


if __name__ == '__main__':
    main()
