# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Official RT-DETR detector checkpoints -> the mmbackbones ``RTDETR`` detector.

Sources are lyuwenyu/RT-DETR's release files (``rtdetr_r18vd_dec3_6x_coco_from_paddle.pth``,
``rtdetr_r50vd_6x_coco_from_paddle.pth``, the HGNetv2 ones, ...), which keep the weights under
``ema.module`` and/or ``model``: ``backbone.*`` (PResNet or HGNetv2, converted by the rules of
:mod:`.rtdetr_official`), ``encoder.*`` (the hybrid encoder, our ``neck``) and ``decoder.*``
(our ``bbox_head``). The architecture is read off the weights; what the weights cannot tell
(attention heads, queries, activation, which level AIFI runs on) takes the official defaults
unless given.
"""
import argparse
import re
import sys
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from .core import (ConversionError, ConversionResult, StateDict, add_num_batches_tracked,
                   apply_rules, check_against_model, strip_prefixes, to_tensors)
from .rtdetr_official import HGNETV2_RULES, PRESNET_RULES

_BN = r'(weight|bias|running_mean|running_var|num_batches_tracked)'
_MHA = r'(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)'
_WB = r'(weight|bias)'
_CONV_UNIT = (r'(?:lateral_convs|downsample_convs)\.\d+|'
              r'(?:fpn_blocks|pan_blocks)\.\d+\.(?:conv[123]|bottlenecks\.\d+\.conv[12])')

#: the hybrid encoder (``encoder.``) -> ``HybridEncoder`` (``neck.``)
ENCODER_RULES = [
    (r'input_proj\.(\d+)\.0\.weight', r'input_proj.\1.conv.weight'),
    (rf'input_proj\.(\d+)\.1\.{_BN}', r'input_proj.\1.bn.\2'),
    (rf'encoder\.(\d+)\.layers\.(\d+)\.self_attn\.{_MHA}',
     r'encoder.\1.layers.\2.self_attn.attn.\3'),
    (rf'encoder\.(\d+)\.layers\.(\d+)\.linear1\.{_WB}', r'encoder.\1.layers.\2.ffn.layers.0.0.\3'),
    (rf'encoder\.(\d+)\.layers\.(\d+)\.linear2\.{_WB}', r'encoder.\1.layers.\2.ffn.layers.1.\3'),
    (rf'encoder\.(\d+)\.layers\.(\d+)\.norm([12])\.{_WB}',
     lambda m: f'encoder.{m[1]}.layers.{m[2]}.norms.{int(m[3]) - 1}.{m[4]}'),
    (rf'({_CONV_UNIT})\.conv\.weight', r'\1.conv.weight'),
    (rf'({_CONV_UNIT})\.norm\.{_BN}', r'\1.bn.\2'),
]
#: the deploy-form conv of a RepVGG block (kept next to its branches); rebuilt by
#: ``switch_to_deploy()``
ENCODER_DROP = [r'(?:fpn|pan)_blocks\.\d+\.bottlenecks\.\d+\.conv\.(?:weight|bias)']

#: the decoder (``decoder.``) -> ``RTDETRHead`` (``bbox_head.``)
DECODER_RULES = [
    (r'input_proj\.(\d+)\.conv\.weight', r'input_proj.\1.conv.weight'),
    (rf'input_proj\.(\d+)\.norm\.{_BN}', r'input_proj.\1.bn.\2'),
    (rf'decoder\.layers\.(\d+)\.self_attn\.{_MHA}', r'decoder_layers.\1.self_attn.attn.\2'),
    (rf'decoder\.layers\.(\d+)\.cross_attn\.'
     rf'(sampling_offsets|attention_weights|value_proj|output_proj)\.{_WB}',
     r'decoder_layers.\1.cross_attn.\2.\3'),
    (rf'decoder\.layers\.(\d+)\.linear1\.{_WB}', r'decoder_layers.\1.ffn.layers.0.0.\2'),
    (rf'decoder\.layers\.(\d+)\.linear2\.{_WB}', r'decoder_layers.\1.ffn.layers.1.\2'),
    (rf'decoder\.layers\.(\d+)\.norm([123])\.{_WB}',
     lambda m: f'decoder_layers.{m[1]}.norms.{int(m[2]) - 1}.{m[3]}'),
    (r'denoising_class_embed\.weight', 'dn.label_embedding.weight'),
    (r'tgt_embed\.weight', 'tgt_embed.weight'),
    (rf'((?:query_pos_head|enc_bbox_head|dec_bbox_head\.\d+)\.layers\.\d+)\.{_WB}', r'\1.\2'),
    (rf'(enc_output\.[01]|enc_score_head|dec_score_head\.\d+)\.{_WB}', r'\1.\2'),
]
#: buffers some versions keep for a fixed eval size; recomputed by the head
DECODER_DROP = [r'anchors', r'valid_mask']

PARTS = (('backbone.', 'backbone.'), ('encoder.', 'neck.'), ('decoder.', 'bbox_head.'))


def unwrap_release(ckpt: Mapping) -> StateDict:
    """The weights of an official release file: ``ema.module`` first, then ``model``."""
    if not isinstance(ckpt, Mapping):
        raise ConversionError(f'expected a checkpoint dict, got {type(ckpt).__name__}.')
    ema = ckpt.get('ema')
    if isinstance(ema, Mapping) and isinstance(ema.get('module'), Mapping):
        return to_tensors(ema['module'])
    for key in ('model', 'state_dict'):
        if isinstance(ckpt.get(key), Mapping):
            return to_tensors(ckpt[key])
    return to_tensors(ckpt)


def _split(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, StateDict]:
    parts: Dict[str, StateDict] = {src: {} for src, _ in PARTS}
    stray = []
    for key, value in strip_prefixes(state_dict, ['module.']).items():
        for src, _ in PARTS:
            if key.startswith(src):
                parts[src][key[len(src):]] = value
                break
        else:
            stray.append(key)
    if stray:
        raise ConversionError(f'RT-DETR detector: {len(stray)} keys are outside backbone. / '
                              f'encoder. / decoder., e.g. {", ".join(stray[:4])}; is this an '
                              f'RT-DETR (rtdetr_pytorch) detector checkpoint?')
    missing = [src for src, _ in PARTS[1:] if not parts[src]]
    if missing:
        raise ConversionError(f'RT-DETR detector: the checkpoint has no {" / ".join(missing)} '
                              f'keys. For a backbone-only checkpoint use '
                              f'tools/model_converters/rtdetr_presnet.py or rtdetr_hgnetv2.py.')
    return parts


def backbone_family(backbone: Mapping[str, torch.Tensor]) -> str:
    if any(k.startswith('res_layers.') for k in backbone):
        return 'PResNet'
    if any(k.startswith('stem.stem1.') for k in backbone):
        return 'HGNetV2'
    raise ConversionError('RT-DETR detector: the backbone is neither PResNet (res_layers.*) nor '
                          'HGNetv2 (stem.stem1.*).')


def convert_rtdetr_detector(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Convert an official RT-DETR detector state dict (``backbone.``/``encoder.``/``decoder.``
    keys, optionally under ``module.``). A state dict without ``backbone.`` keys converts the
    encoder and decoder only."""
    parts = _split(state_dict)
    out: StateDict = {}
    unused: List[str] = []
    dropped: List[str] = []
    rules = {'encoder.': (ENCODER_RULES, ENCODER_DROP), 'decoder.': (DECODER_RULES, DECODER_DROP)}
    if parts['backbone.']:
        family = backbone_family(parts['backbone.'])
        rules['backbone.'] = (PRESNET_RULES if family == 'PResNet' else HGNETV2_RULES, ())
    for src, dst in PARTS:
        if src not in rules:
            continue
        table, drop = rules[src]
        result = apply_rules(parts[src], table, drop)
        converted = add_num_batches_tracked(result.state_dict)
        out.update({dst + k: v for k, v in converted.items()})
        unused += [src + k for k in result.unused]
        dropped += [src + k for k in result.dropped]
    return ConversionResult(out, unused, dropped)


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    found = {int(m[1]) for k in state for m in [re.fullmatch(pattern, k)] if m}
    return max(found) + 1 if found else 0


def rtdetr_arch_from_state_dict(state: Mapping[str, torch.Tensor], *, nhead: int = 8,
                                num_heads: int = 8, num_queries: int = 300,
                                act: str = 'silu', eval_idx: int = -1,
                                use_encoder_idx: Optional[List[int]] = None
                                ) -> Tuple[dict, dict]:
    """(neck config, head config) of a converted state dict (our key names)."""
    neck = {k[len('neck.'):]: v for k, v in state.items() if k.startswith('neck.')}
    head = {k[len('bbox_head.'):]: v for k, v in state.items() if k.startswith('bbox_head.')}
    levels = _count(neck, r'input_proj\.(\d+)\.conv\.weight')
    in_channels = [int(neck[f'input_proj.{i}.conv.weight'].shape[1]) for i in range(levels)]
    hidden = int(neck['input_proj.0.conv.weight'].shape[0])
    num_encoders = _count(neck, r'encoder\.(\d+)\.layers\.0\.norms\.0\.weight')
    if use_encoder_idx is None:
        use_encoder_idx = list(range(levels - num_encoders, levels))
    if len(use_encoder_idx) != num_encoders:
        raise ConversionError(f'RT-DETR detector: the checkpoint has {num_encoders} AIFI encoders '
                              f'but use_encoder_idx={use_encoder_idx}.')
    enc_layers = _count(neck, r'encoder\.0\.layers\.(\d+)\.norms\.0\.weight') if num_encoders else 0
    csp_hidden = int(neck['fpn_blocks.0.conv1.conv.weight'].shape[0])
    blocks = _count(neck, r'fpn_blocks\.0\.bottlenecks\.(\d+)\.conv1\.conv\.weight')
    neck_cfg = dict(
        type='HybridEncoder', in_channels=in_channels,
        feat_strides=[8 * 2 ** i for i in range(levels)],
        hidden_dim=hidden, nhead=nhead, use_encoder_idx=use_encoder_idx,
        num_encoder_layers=enc_layers, expansion=csp_hidden / hidden, depth_mult=blocks / 3,
        act=act,
        dim_feedforward=int(neck['encoder.0.layers.0.ffn.layers.0.0.weight'].shape[0])
        if num_encoders else 1024)

    head_levels = _count(head, r'input_proj\.(\d+)\.conv\.weight')
    head_in = [int(head[f'input_proj.{i}.conv.weight'].shape[1]) for i in range(head_levels)
               if head[f'input_proj.{i}.conv.weight'].shape[-1] == 1]
    embed = int(head['enc_output.0.weight'].shape[0])
    weights = int(head['decoder_layers.0.cross_attn.attention_weights.weight'].shape[0])
    if weights % (num_heads * head_levels):
        raise ConversionError(f'RT-DETR detector: {weights} attention weights per query do not '
                              f'split into num_heads={num_heads} x {head_levels} levels.')
    queries = int(head['tgt_embed.weight'].shape[0]) if 'tgt_embed.weight' in head else num_queries
    head_cfg = dict(
        type='RTDETRHead', num_classes=int(head['enc_score_head.weight'].shape[0]),
        in_channels=head_in, num_levels=head_levels, embed_dims=embed, num_heads=num_heads,
        num_points=weights // (num_heads * head_levels), num_queries=queries,
        num_decoder_layers=_count(head, r'decoder_layers\.(\d+)\.norms\.0\.weight'),
        feedforward_channels=int(head['decoder_layers.0.ffn.layers.0.0.weight'].shape[0]),
        eval_idx=eval_idx, learnt_init_query='tgt_embed.weight' in head,
        num_denoising=100 if 'dn.label_embedding.weight' in head else 0)
    return neck_cfg, head_cfg


def detector_config(state: StateDict, **arch_kwargs) -> dict:
    """The ``model`` config of an ``RTDETR`` detector for converted weights."""
    from .rtdetr_official import hgnetv2_factory, presnet_factory
    neck_cfg, head_cfg = rtdetr_arch_from_state_dict(state, **arch_kwargs)
    backbone = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    if not backbone:
        raise ConversionError('RT-DETR detector: the checkpoint has no backbone. keys.')
    factory = hgnetv2_factory if 'stem.1.conv_a.conv.weight' in backbone else presnet_factory
    _, backbone_cfg = factory(backbone)
    num_out = len(neck_cfg['in_channels'])
    num_stages = 4
    backbone_cfg.update(out_indices=tuple(range(num_stages - num_out, num_stages)))
    return dict(type='RTDETR', backbone=backbone_cfg, neck=neck_cfg, bbox_head=head_cfg,
                data_preprocessor=dict(type='DetDataPreprocessor', mean=[0., 0., 0.],
                                       std=[255., 255., 255.], bgr_to_rgb=True))


def build_detector(model_cfg: dict) -> nn.Module:
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import mmbackbones  # noqa: F401  (registers the models)
    init_default_scope('mmdet')
    return MODELS.build(model_cfg)


def main(argv: Optional[List[str]] = None) -> int:
    from mmbackbones.engine.checkpoint import CheckpointLoadError, load_checkpoint_weights_only

    from .cli import check_paths, refuse_nonfinite, write_checkpoint
    parser = argparse.ArgumentParser(description='Convert an official RT-DETR detector '
                                                 'checkpoint into an mmbackbones RTDETR one.')
    parser.add_argument('src', help='official checkpoint, e.g. '
                                    'rtdetr_r50vd_6x_coco_from_paddle.pth')
    parser.add_argument('dst', help='output checkpoint (state_dict + meta.model config)')
    parser.add_argument('--nhead', type=int, default=8, help='AIFI heads (not in the weights)')
    parser.add_argument('--num-heads', type=int, default=8, help='decoder heads')
    parser.add_argument('--num-queries', type=int, default=300)
    parser.add_argument('--eval-idx', type=int, default=-1)
    args = parser.parse_args(argv)
    check_paths(parser, args)
    try:
        try:
            ckpt = load_checkpoint_weights_only(args.src, map_location='cpu')
        except CheckpointLoadError as err:
            raise ConversionError(f'{args.src}: cannot be read as a weights-only checkpoint '
                                  f'({err}).') from None
        result = convert_rtdetr_detector(unwrap_release(ckpt)).check('RT-DETR detector')
        refuse_nonfinite(result.state_dict, args.src)
        model_cfg = detector_config(result.state_dict, nhead=args.nhead,
                                    num_heads=args.num_heads, num_queries=args.num_queries,
                                    eval_idx=args.eval_idx)
        model = build_detector(model_cfg)
        check_against_model(result.state_dict, model, 'RT-DETR detector')
        write_checkpoint(dict(state_dict=result.state_dict,
                              meta=dict(source='RT-DETR detector', model=model_cfg)), args.dst)
    except (ConversionError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'RT-DETR detector: converted {len(result.state_dict)} tensors from {args.src} -> '
          f'{args.dst}')
    print(f'  model: {model_cfg["backbone"]["type"]} + HybridEncoder(in_channels='
          f'{model_cfg["neck"]["in_channels"]}) + RTDETRHead(num_classes='
          f'{model_cfg["bbox_head"]["num_classes"]}, '
          f'{model_cfg["bbox_head"]["num_decoder_layers"]} decoder layers); use load_from='
          f"'{args.dst}' with that model config")
    return 0
