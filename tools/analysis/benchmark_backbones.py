"""Benchmark mmbackbones backbones against their peer implementation.

For every arch: eval forward latency and one train step (forward + backward), ours vs the peer
(timm for VoVNet), in one process, alternating runs, on the same input and thread count, with
identical weights. Prints a markdown table with the ratio ours / peer (< 1 means we are faster).

    python tools/analysis/benchmark_backbones.py --family vovnet --threads 2 \
        --shape 1 3 512 512 --shape 2 3 512 512

``--amp bf16`` runs both models under ``torch.autocast(<device>, dtype=torch.bfloat16)`` (weights
stay float32, as in mixed-precision training), ``--amp fp16`` likewise with float16 (GPU only).
On a CPU, bf16 needs bf16 kernels (AVX-512 / AMX): without them PyTorch runs slow reference
kernels and the timings say nothing, so the tool refuses (MMBACKBONES_ALLOW_EMULATED_BF16=1
overrides). The header line and the JSON name the dtype and, on a CPU, its kernels.
"""
import argparse
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

import mmbackbones  # noqa: F401
from mmbackbones.analysis import time_pair
from mmbackbones.analysis.timing import cpu_description

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


def _yolov8_cases(layout: Dict[str, bool], fuse_peer: bool = False
                  ) -> Dict[str, Callable[[], Tuple[nn.Module, nn.Module]]]:
    from ultralytics.nn.tasks import DetectionModel

    from mmbackbones.converters import convert_ultralytics_yolov8
    from mmbackbones.models import YOLOv8CSPDarknet

    def make(scale: str):
        def build():
            detector = DetectionModel(f'yolov8{scale}.yaml', verbose=False)
            ours = YOLOv8CSPDarknet(arch=scale, **layout)
            ours.load_state_dict(
                convert_ultralytics_yolov8(detector.state_dict()).check('ultralytics').state_dict)
            if fuse_peer:  # what ultralytics' predictor runs: conv + BN folded by fuse()
                detector.fuse(verbose=False)
            return ours, _UltralyticsBackbone(detector)
        return build

    return {scale: make(scale) for scale in 'nsmlx'}


def _yolov8_fused_cases(layout: Dict[str, bool]
                        ) -> Dict[str, Callable[[], Tuple[nn.Module, nn.Module]]]:
    """YOLOv8 vs ultralytics after its own ``fuse()`` (inference only: ``--modes eval``)."""
    return _yolov8_cases(layout, fuse_peer=True)


class _UltralyticsBackbone(nn.Module):
    """ultralytics' YOLOv8 layers 0-9 (the backbone), returning P3/P4/P5 (layers 4, 6, 9)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.layers = detector.model[:10]

    def forward(self, x):
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in (4, 6, 9):
                outs.append(x)
        return outs


def _timm_cases(layout: Dict[str, bool]
                ) -> Dict[str, Callable[[], Tuple[nn.Module, nn.Module]]]:
    """TimmBackbone vs the timm features_only model it wraps: the ratio is its overhead."""
    import timm

    from mmbackbones.models import TimmBackbone

    # stages 0-3 are strides 4-32 in every one (timm feature 0 is stride 2 except in convnext)
    models = {'resnet50d': (0, 1, 2, 3), 'convnext_tiny': (0, 1, 2, 3),
              'efficientnet_b3': (0, 1, 2, 3), 'regnetx_032': (0, 1, 2, 3)}

    def make(name: str, out_indices: Tuple[int, ...]):
        def build():
            # norm_eval=False: BN trains in both, as in timm's model
            ours = TimmBackbone(name, out_indices=out_indices, norm_eval=False, **layout)
            peer = timm.create_model(name, features_only=True,
                                     out_indices=ours.timm_out_indices)
            peer.load_state_dict(ours.timm_model.state_dict())
            return ours, peer
        return build

    return {name: make(name, indices) for name, indices in models.items()}


def _control_cases(layout: Dict[str, bool]
                   ) -> Dict[str, Callable[[], Tuple[nn.Module, nn.Module]]]:
    """The noise floor: a peer against a second instance of itself with the same weights
    (identical work, so every ratio away from 1.0 is this machine's process-level noise)."""
    import timm
    from ultralytics.nn.tasks import DetectionModel

    def ultralytics_pair(scale: str):
        def build():
            first = DetectionModel(f'yolov8{scale}.yaml', verbose=False)
            second = DetectionModel(f'yolov8{scale}.yaml', verbose=False)
            second.load_state_dict(first.state_dict())
            return _UltralyticsBackbone(second), _UltralyticsBackbone(first)
        return build

    def timm_pair(name: str):
        def build():
            first = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4))
            second = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4))
            second.load_state_dict(first.state_dict())
            return second, first
        return build

    return {'ultralytics-yolov8m': ultralytics_pair('m'),
            'ultralytics-yolov8x': ultralytics_pair('x'), 'timm-resnet50d': timm_pair('resnet50d')}


def _presnet_cases(layout: Dict[str, bool]
                   ) -> Dict[str, Callable[[], Tuple[nn.Module, nn.Module]]]:
    """PResNet vs timm's resnet*d features_only (R18/R34 patched with the same stage-1
    projection, so both run the same convolutions)."""
    import timm
    from timm.models.resnet import downsample_avg

    from mmbackbones.converters import convert_timm_resnetd
    from mmbackbones.models import PResNet

    def make(depth: int):
        def build():
            peer = timm.create_model(f'resnet{depth}d', features_only=True,
                                     out_indices=(1, 2, 3, 4))
            if depth < 50:
                peer.layer1[0].downsample = downsample_avg(64, 64, 1, stride=1)
            ours = PResNet(depth=depth, norm_eval=False, **layout)
            ours.load_state_dict(convert_timm_resnetd(peer.state_dict()).check('timm').state_dict)
            return ours, peer
        return build

    return {f'R{depth}': make(depth) for depth in (18, 34, 50, 101)}


def _hgnetv2_cases(layout: Dict[str, bool]
                   ) -> Dict[str, Callable[[], Tuple[nn.Module, nn.Module]]]:
    """HGNetV2 vs timm's hgnetv2_b* features_only (L/X/H are b4/b5/b6)."""
    import timm

    from mmbackbones.converters import convert_timm_hgnetv2
    from mmbackbones.models import HGNetV2

    pairs = [('b0', 'hgnetv2_b0'), ('b2', 'hgnetv2_b2'), ('L', 'hgnetv2_b4'),
             ('X', 'hgnetv2_b5'), ('H', 'hgnetv2_b6')]

    def make(arch: str, name: str):
        def build():
            peer = timm.create_model(name, features_only=True, out_indices=(0, 1, 2, 3))
            ours = HGNetV2(arch=arch, norm_eval=False, **layout)
            ours.load_state_dict(convert_timm_hgnetv2(peer.state_dict()).check('timm').state_dict)
            return ours, peer
        return build

    return {arch: make(arch, name) for arch, name in pairs}


def _vanillanet_cases(layout: Dict[str, bool]
                      ) -> Dict[str, Callable[[], Tuple[nn.Module, nn.Module]]]:
    """VanillaNet deploy form (ours) vs its own train form in eval (the re-parameterisation
    speed-up, same weights), and vs mmdet's ResNet-18/50 (similar FLOPs to vanillanet_5) in
    cases named ``<arch>:<resnet>``. Use ``--modes eval``: the deploy form is for inference."""
    import copy

    from mmdet.models.backbones import ResNet

    from mmbackbones.models import VanillaNet

    def deployed(train: nn.Module) -> nn.Module:
        model = copy.deepcopy(train).eval()
        model.switch_to_deploy()
        return model

    def make(arch: str, peer: Optional[int] = None):
        def build():
            train = VanillaNet(arch=arch, **layout).eval()
            if peer is None:
                return deployed(train), train
            resnet = ResNet(depth=peer, out_indices=(1, 2, 3))
            resnet.eval()  # mmdet's ResNet.train() returns None: no chaining
            return deployed(train), resnet
        return build

    return {'vanillanet_5': make('vanillanet_5'), 'vanillanet_13': make('vanillanet_13'),
            'vanillanet_5:resnet18': make('vanillanet_5', 18),
            'vanillanet_5:resnet50': make('vanillanet_5', 50)}


def _moganet_cases(layout: Dict[str, bool]
                   ) -> Dict[str, Callable[[], Tuple[nn.Module, nn.Module]]]:
    """MogaNet has no peer implementation to load into; each arch runs next to the mmdet ResNet
    of the most similar ImageNet FLOPs (xtiny 0.8G / tiny 1.1G: R18 1.8G; small 5.0G: R50
    4.1G; base 9.9G: R101 7.8G; large 15.9G, xlarge 34.5G: R152 11.6G), all four stages out,
    BN in train mode for the train step. Cases are named ``<arch>:resnet<depth>``."""
    from mmdet.models.backbones import ResNet

    from mmbackbones.models import MogaNet

    def make(arch: str, depth: int):
        def build():
            resnet = ResNet(depth=depth, out_indices=(0, 1, 2, 3), norm_eval=False)
            resnet.eval()  # mmdet's ResNet.train() returns None: no chaining
            return MogaNet(arch=arch, norm_eval=False, **layout), resnet
        return build

    pairs = [('xtiny', 18), ('tiny', 18), ('small', 50), ('base', 101), ('large', 152),
             ('xlarge', 152)]
    return {f'{arch}:resnet{depth}': make(arch, depth) for arch, depth in pairs}


FAMILIES = {'vovnet': (_vovnet_cases, 'timm'), 'shufflenetv2': (_shufflenetv2_cases, 'torchvision'),
            'moganet': (_moganet_cases, 'mmdet ResNet of similar FLOPs'),
            'yolov8': (_yolov8_cases, 'ultralytics'),
            'yolov8-fused': (_yolov8_fused_cases, 'ultralytics after fuse()'),
            'timm': (_timm_cases, 'timm features_only'),
            'control': (_control_cases, 'a second instance of the same peer'),
            'presnet': (_presnet_cases, 'timm'), 'hgnetv2': (_hgnetv2_cases, 'timm'),
            'vanillanet': (_vanillanet_cases, 'train form (eval), or mmdet ResNet after ":"')}


def _train_step(model: nn.Module, x: torch.Tensor, amp: Optional[torch.dtype] = None
                ) -> Callable[[], None]:
    def step():
        with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            outs = model(x)
        sum(o.float().mean() for o in outs).backward()
        for p in model.parameters():
            p.grad = None
        if x.is_cuda:  # time the kernels, not their launch
            torch.cuda.synchronize()
    return step


def _eval_step(model: nn.Module, x: torch.Tensor, amp: Optional[torch.dtype] = None
               ) -> Callable[[], None]:
    def step():
        with torch.no_grad(), torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
    return step


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--family', choices=sorted(FAMILIES), default='vovnet')
    parser.add_argument('--arch', nargs='*', help='subset of archs (default: all)')
    parser.add_argument('--shape', nargs=4, type=int, action='append',
                        help='input N C H W (repeatable; default 1 3 512 512 and 2 3 512 512)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--modes', nargs='+', choices=['eval', 'train'], default=['eval', 'train'])
    parser.add_argument('--layout', choices=['default', 'contiguous'], default='default',
                        help="ours with its default memory layout, or forced to NCHW-contiguous "
                             "(channels_last=False: the same kernels as the peer)")
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--amp', choices=['fp16', 'bf16'],
                        help='run ours and the peer under autocast with this dtype: bf16 (CPU '
                        'with AVX-512 / AMX, or GPU) or fp16 (GPU); default: float32')
    parser.add_argument('--json', metavar='PATH',
                        help='also write the rows (and the settings) to this JSON file, e.g. '
                        'docs/benchmarks/<family>.json (read by tools/analysis/make_model_zoo.py)')
    args = parser.parse_args(argv)
    amp_kernels = _check_amp(parser, args)
    amp = {None: None, 'fp16': torch.float16, 'bf16': torch.bfloat16}[args.amp]
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
    where = (torch.cuda.get_device_name() if args.device == 'cuda' else f'{args.threads} threads')
    dtype = 'fp32' if args.amp is None else f'{args.amp} autocast' + (
        f' ({amp_kernels})' if amp_kernels else '')
    print(f'torch {torch.__version__}, {where}, {dtype}, {args.rounds} alternating '
          f'rounds, ours with {layout}; ratio = ours / {peer_name} (median of per-round ratios, '
          f'with a 90% bootstrap interval)\n')
    print('| arch | input | mode | ours ms | peer ms | ratio | 90% interval |')
    print('|---|---|---|---|---|---|---|')
    rows = []
    for arch, build in cases.items():
        ours, peer = build()
        ours, peer = ours.to(args.device), peer.to(args.device)
        for shape in shapes:
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(args.device)
            for mode in args.modes:
                if mode == 'eval':
                    ours.eval(), peer.eval()
                    t = time_pair(_eval_step(ours, x, amp), _eval_step(peer, x, amp),
                                  rounds=args.rounds, warmup=args.warmup)
                else:
                    ours.train(), peer.train()
                    t = time_pair(_train_step(ours, x, amp), _train_step(peer, x, amp),
                                  rounds=args.rounds, warmup=args.warmup)
                print(f'| {arch} | {"x".join(map(str, shape))} | {mode} | {t.ours_ms:.1f} | '
                      f'{t.peer_ms:.1f} | {t.ratio:.3f} | {t.ratio_low:.3f}-{t.ratio_high:.3f} |',
                      flush=True)
                rows.append(dict(backbone=type(ours).__name__, arch=arch, input=list(shape),
                                 mode=mode, ours_ms=t.ours_ms, peer_ms=t.peer_ms, ratio=t.ratio,
                                 ratio_low=t.ratio_low, ratio_high=t.ratio_high))
    if args.json:
        _write_json(args.json, dict(
            family=args.family, peer=peer_name, torch=torch.__version__, device=args.device,
            where=where, cpu=cpu_description(), threads=args.threads, amp=args.amp or 'fp32', layout=args.layout,
            rounds=args.rounds, rows=rows, **({'amp_kernels': amp_kernels} if amp_kernels else {})))


def _check_amp(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Optional[str]:
    """Refuse ``--device`` / ``--amp`` combinations that cannot be timed meaningfully; return the
    CPU's bf16 kernels in words for ``--amp bf16 --device cpu`` (else None)."""
    if args.device not in ('cpu', 'cuda'):
        parser.error(f"--device: {args.device!r} is not supported; choose 'cpu' or 'cuda'")
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible; use --device cpu")
    if args.amp is None:
        return None
    if args.device == 'cpu':
        if args.amp == 'fp16':
            parser.error('--amp fp16: float16 autocast is for --device cuda; on a CPU use '
                         '--amp bf16 (or no --amp for float32)')
        from mmbackbones.engine.amp import CPUBF16UnsupportedError, check_cpu_bf16, cpu_bf16_kind
        try:
            check_cpu_bf16('--amp bf16')
        except CPUBF16UnsupportedError as exc:
            parser.error(str(exc))
        return cpu_bf16_kind()
    if args.amp == 'bf16' and not torch.cuda.is_bf16_supported():
        parser.error(f'--amp bf16: {torch.cuda.get_device_name()} has no bfloat16 support; use '
                     '--amp fp16')
    return None


def _write_json(path: str, data: dict) -> None:
    import json
    import os
    from mmbackbones.engine.checkpoint import atomic_write_bytes
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes((json.dumps(data, indent=1) + '\n').encode(), path)


if __name__ == '__main__':
    main()
