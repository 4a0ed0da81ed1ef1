"""Parameters and FLOPs of a detector config or of one backbone arch (mmengine's analysis tools).

    python tools/analysis/get_flops.py configs/vovnet/retinanet_vovnet-39-ese_fpn_1x_coco.py \
        --shape 800 1333
    python tools/analysis/get_flops.py --backbone VoVNet --arch V-39-eSE --shape 3 224 224

No dataset is needed: a detector gets one zero image of ``--shape`` passed through the config's
own ``data_preprocessor`` (normalisation, padding to its size divisor), then runs in
``mode='tensor'`` (backbone, neck and head; no post-processing). FLOPs follow mmengine's
``FlopAnalyzer`` (fvcore's convention): one multiply-add counts as one FLOP; ops it has no
handle for (activations, elementwise products) count zero (``--show-unsupported`` lists them).
Papers that count a multiply and an add as two FLOPs quote twice the total, which is printed too.
The model is counted as written (training form: BN unfolded, re-parameterisable branches
separate); e.g. RT-DETR-R18vd at 640x640 is 30.87 G multiply-adds = 61.7 G FLOPs here, and
60.7 G in its deployed form (RepVGG branches fused, BN folded), where the paper says 60 G.
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

if __package__ in (None, ''):  # run as a script: make the repository importable
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import mmbackbones  # noqa: E402,F401  (registers the backbones)


def _analyze(model: nn.Module, inputs: tuple, show_unsupported: bool = False) -> Dict:
    from mmengine.analysis import FlopAnalyzer

    from mmbackbones.models.layers import bn_folding
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.unsupported_ops_warnings(show_unsupported)
    analyzer.uncalled_modules_warnings(False)
    with bn_folding(False):  # the architecture as written: conv, BN and activation ops
        return dict(flops=int(analyzer.total()), by_operator=dict(analyzer.by_operator()),
                    params=sum(p.numel() for p in model.parameters()))


def backbone_complexity(backbone: str, arch: Optional[str] = None,
                        shape: Sequence[int] = (3, 224, 224), show_unsupported: bool = False,
                        **kwargs) -> Dict:
    """``params`` and ``flops`` of one backbone (eval mode, batch 1, input ``shape`` = C, H, W).

    Extra keyword arguments go to the backbone (e.g. ``out_indices``).
    """
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = dict(type=backbone, **kwargs)
    if arch is not None:
        cfg['arch'] = arch
    model = MODELS.build(cfg).eval()
    with torch.no_grad():
        result = _analyze(model, (torch.zeros(1, *shape), ), show_unsupported)
    result.update(out_channels=tuple(getattr(model, 'out_channels', ())),
                  out_strides=tuple(getattr(model, 'out_strides', ())))
    return result


class _TensorMode(nn.Module):
    """A detector called as ``model(inputs, data_samples, mode='tensor')``, for tracing."""

    def __init__(self, detector: nn.Module, data_samples: list) -> None:
        super().__init__()
        self.detector = detector
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor):
        return self.detector(inputs, self.data_samples, mode='tensor')


def detector_complexity(config: str, shape: Sequence[int] = (800, 1333),
                        cfg_options: Optional[dict] = None, show_unsupported: bool = False) -> Dict:
    """``params`` and ``flops`` of the detector a config builds, on one H x W image."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model).eval()
    height, width = shape
    sample = DetDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                         scale_factor=(1.0, 1.0)))
    data = model.data_preprocessor(dict(inputs=[torch.zeros(3, height, width, dtype=torch.uint8)],
                                        data_samples=[sample]), training=False)
    with torch.no_grad():
        result = _analyze(_TensorMode(model, data['data_samples']), (data['inputs'], ),
                          show_unsupported)
    result['input_shape'] = tuple(data['inputs'].shape)
    return result


def human(number: float) -> str:
    for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(number) >= scale:
            return f'{number / scale:.2f} {unit}'
    return str(number)


def main(argv: Optional[List[str]] = None) -> int:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', nargs='?', help='detector config file')
    parser.add_argument('--backbone', help='a registered backbone type instead of a config, '
                        'e.g. VoVNet')
    parser.add_argument('--arch', help='named arch of --backbone, e.g. V-39-eSE')
    parser.add_argument('--shape', type=int, nargs='+',
                        help='input size: H W (or S) for a config, default 800 1333; C H W '
                        '(or H W, or S) for a backbone, default 3 224 224')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as key=value pairs')
    parser.add_argument('--show-unsupported', action='store_true',
                        help='list the operators FlopAnalyzer counted as zero')
    args = parser.parse_args(argv)
    if (args.config is None) == (args.backbone is None):
        parser.error('give either a config file or --backbone TYPE (with --arch), not both')
    if args.arch and not args.backbone:
        parser.error('--arch needs --backbone')
    shape = args.shape
    if args.backbone:
        if shape is None:
            shape = [3, 224, 224]
        elif len(shape) in (1, 2):
            shape = [3] + (shape * 2 if len(shape) == 1 else shape)
        if len(shape) != 3:
            parser.error(f'--shape for a backbone takes C H W, H W or S; got {args.shape}')
        result = backbone_complexity(args.backbone, args.arch, shape, args.show_unsupported)
        what = f'{args.backbone} {args.arch or ""}'.strip()
        input_shape = (1, *shape)
    else:
        if not osp.isfile(args.config):
            parser.error(f"config: '{args.config}' is not a file")
        shape = shape or [800, 1333]
        if len(shape) == 1:
            shape = shape * 2
        if len(shape) != 2:
            parser.error(f'--shape for a config takes H W or S; got {args.shape}')
        result = detector_complexity(args.config, shape, args.cfg_options, args.show_unsupported)
        what, input_shape = args.config, result['input_shape']
    print(f'Model: {what}')
    print(f'Input shape: {tuple(input_shape)}')
    print(f'Params: {human(result["params"])} ({result["params"]:,})')
    print(f'FLOPs: {human(result["flops"])} ({result["flops"]:,}); one multiply-add = 1 FLOP')
    # papers that count a multiply and an add separately (RT-DETR, YOLO) quote twice this
    print(f'       = {human(2 * result["flops"])} counting multiply and add as 2 FLOPs')
    by_op = ', '.join(f'{k} {human(v)}' for k, v in sorted(result['by_operator'].items(),
                                                            key=lambda kv: -kv[1]))
    print(f'FLOPs by operator: {by_op}')
    if result.get('out_channels'):
        print(f'out_channels: {result["out_channels"]}, out_strides: {result["out_strides"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
