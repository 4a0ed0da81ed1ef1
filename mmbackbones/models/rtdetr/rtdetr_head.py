# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""RT-DETR's decoder and detection head: IoU-aware query selection, deformable decoder with
iterative box refinement, contrastive denoising, and the official losses and post-processing."""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.models.layers.transformer import (MLP, DeformableDetrTransformerDecoderLayer,
                                             inverse_sigmoid)
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_overlaps, bbox_xyxy_to_cxcywh
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import nn

from ..layers.conv_module import FoldableConvModule
from .denoising import ContrastiveDenoising
from .hybrid_encoder import act_cfg_of

#: RT-DETR's matching costs: focal class cost (alpha 0.25, gamma 2, eps 1e-8), L1 on
#: normalised (cx, cy, w, h), GIoU
DEFAULT_ASSIGNER = dict(type='HungarianAssigner', match_costs=[
    dict(type='FocalLossCost', weight=2.0, alpha=0.25, gamma=2.0, eps=1e-8),
    dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
    dict(type='IoUCost', iou_mode='giou', weight=2.0)])


@MODELS.register_module()
class RTDETRHead(BaseModule):
    """RT-DETR's transformer decoder with its encoder-side query selection, as a detection head.

    The neck's levels are projected (1x1 conv + BN; extra levels by 3x3 stride-2 conv + BN) and
    flattened into the memory. Every memory token gets an anchor (centre of its cell, size
    ``0.05 * 2 ** level``); anchors within ``anchor_eps`` of the border are invalid (their tokens
    are zeroed for the selection and their logit box is +inf). The encoder head scores the
    tokens; the ``num_queries`` best (by max class logit) give the initial reference boxes and,
    detached, the query content (``learnt_init_query``: a learned embedding instead). Each
    decoder layer embeds the reference box with an MLP as the query position, refines the box
    in logit space and passes it on detached.

    In training every decoder layer, the encoder's top-k proposals and every denoising layer are
    supervised with the varifocal, L1 and GIoU losses, all normalised by the number of ground
    truth boxes averaged over processes (times the group count for denoising).

    Args:
        num_classes (int): Object classes. Default: 80.
        in_channels (Sequence[int]): Channels of the neck levels. Default: (256, 256, 256).
        num_levels (int): Memory levels; levels beyond the inputs are made by stride-2 convs.
            Default: 3.
        embed_dims (int): Width of the decoder. Default: 256.
        num_heads (int): Attention heads. Default: 8.
        num_points (int): Sampling points per head and level. Default: 4.
        num_queries (int): Object queries. Default: 300.
        num_decoder_layers (int): Default: 6.
        feedforward_channels (int): FFN width. Default: 1024.
        dropout (float): Default: 0.0.
        act (str): FFN activation. Default: 'relu'.
        eval_idx (int): Decoder layer whose output is the prediction at test time. Default: -1.
        learnt_init_query (bool): Learned query content instead of the selected features.
        anchor_eps (float): Border margin of valid anchors. Default: 1e-2.
        num_denoising (int): Denoising queries (0: none). Default: 100.
        label_noise_ratio (float): Default: 0.5.
        box_noise_scale (float): Default: 1.0.
        loss_cls, loss_bbox, loss_iou (dict): Loss configs (varifocal 1, L1 5, GIoU 2).
        train_cfg (dict): ``assigner``: RT-DETR's Hungarian matching by default.
        test_cfg (dict): ``max_per_img``: detections kept per image. Default: 300.
    """

    def __init__(self, num_classes: int = 80, in_channels: Sequence[int] = (256, 256, 256),
                 num_levels: int = 3, embed_dims: int = 256, num_heads: int = 8,
                 num_points: int = 4, num_queries: int = 300, num_decoder_layers: int = 6,
                 feedforward_channels: int = 1024, dropout: float = 0.0, act: str = 'relu',
                 eval_idx: int = -1, learnt_init_query: bool = False, anchor_eps: float = 1e-2,
                 num_denoising: int = 100, label_noise_ratio: float = 0.5,
                 box_noise_scale: float = 1.0,
                 loss_cls: dict = dict(type='RTDETRVarifocalLoss', alpha=0.75, gamma=2.0,
                                       loss_weight=1.0),
                 loss_bbox: dict = dict(type='L1Loss', loss_weight=5.0),
                 loss_iou: dict = dict(type='GIoULoss', loss_weight=2.0),
                 train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        in_channels = list(in_channels)
        if not 1 <= len(in_channels) <= num_levels:
            raise ValueError(f'RTDETRHead: got {len(in_channels)} input levels (in_channels='
                             f'{in_channels}) for num_levels={num_levels}; the head needs between '
                             f'1 and num_levels inputs (extra levels are made by stride-2 convs).')
        if embed_dims % num_heads != 0:
            raise ValueError(f'RTDETRHead: embed_dims={embed_dims} is not divisible by '
                             f'num_heads={num_heads}.')
        if not -num_decoder_layers <= eval_idx < num_decoder_layers:
            raise ValueError(f'RTDETRHead: eval_idx={eval_idx} is out of range for '
                             f'num_decoder_layers={num_decoder_layers}; use '
                             f'{-num_decoder_layers}..{num_decoder_layers - 1}.')
        if num_queries < 1:
            raise ValueError(f'RTDETRHead: num_queries={num_queries} must be positive.')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.num_levels = num_levels
        self.embed_dims = embed_dims
        self.num_queries = num_queries
        self.num_decoder_layers = num_decoder_layers
        self.eval_idx = eval_idx % num_decoder_layers
        self.learnt_init_query = learnt_init_query
        self.anchor_eps = anchor_eps
        self.train_cfg = train_cfg or {}
        self.test_cfg = test_cfg or {}

        bn = dict(type='BN')
        self.input_proj = nn.ModuleList([
            FoldableConvModule(c, embed_dims, 1, bias=False, norm_cfg=bn, act_cfg=None)
            for c in in_channels])
        prev = in_channels[-1]
        for _ in range(num_levels - len(in_channels)):
            self.input_proj.append(FoldableConvModule(prev, embed_dims, 3, stride=2, padding=1,
                                                      bias=False, norm_cfg=bn, act_cfg=None))
            prev = embed_dims

        layer_cfg = dict(
            self_attn_cfg=dict(embed_dims=embed_dims, num_heads=num_heads, attn_drop=dropout,
                               dropout_layer=dict(type='Dropout', drop_prob=dropout),
                               batch_first=True),
            cross_attn_cfg=dict(embed_dims=embed_dims, num_heads=num_heads,
                                num_levels=num_levels, num_points=num_points, dropout=dropout,
                                batch_first=True),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=feedforward_channels,
                         num_fcs=2, ffn_drop=dropout, act_cfg=act_cfg_of('RTDETRHead', act)))
        self.decoder_layers = nn.ModuleList([
            DeformableDetrTransformerDecoderLayer(**_copy(layer_cfg))
            for _ in range(num_decoder_layers)])

        self.dn = (ContrastiveDenoising(num_classes, embed_dims, num_denoising,
                                        label_noise_ratio, box_noise_scale)
                   if num_denoising > 0 else None)
        if learnt_init_query:
            self.tgt_embed = nn.Embedding(num_queries, embed_dims)
        self.query_pos_head = MLP(4, 2 * embed_dims, embed_dims, 2)
        self.enc_output = nn.Sequential(nn.Linear(embed_dims, embed_dims),
                                        nn.LayerNorm(embed_dims))
        self.enc_score_head = nn.Linear(embed_dims, num_classes)
        self.enc_bbox_head = MLP(embed_dims, embed_dims, 4, 3)
        self.dec_score_head = nn.ModuleList([nn.Linear(embed_dims, num_classes)
                                             for _ in range(num_decoder_layers)])
        self.dec_bbox_head = nn.ModuleList([MLP(embed_dims, embed_dims, 4, 3)
                                            for _ in range(num_decoder_layers)])

        self.assigner = TASK_UTILS.build(self.train_cfg.get('assigner', DEFAULT_ASSIGNER))
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.loss_iou = MODELS.build(loss_iou)

    def init_weights(self) -> None:
        super().init_weights()
        prior = -math.log((1 - 0.01) / 0.01)
        for score in [self.enc_score_head, *self.dec_score_head]:
            nn.init.constant_(score.bias, prior)
        for box in [self.enc_bbox_head, *self.dec_bbox_head]:
            nn.init.zeros_(box.layers[-1].weight)
            nn.init.zeros_(box.layers[-1].bias)
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        for layer in self.query_pos_head.layers:
            nn.init.xavier_uniform_(layer.weight)
        if self.learnt_init_query:
            nn.init.xavier_uniform_(self.tgt_embed.weight)

    # ------------------------------------------------------------------ transformer

    def _memory(self, feats: Sequence[torch.Tensor]):
        if len(feats) != len(self.in_channels):
            raise ValueError(f'RTDETRHead: got {len(feats)} feature maps, configured for '
                             f'{len(self.in_channels)} (in_channels={self.in_channels}).')
        levels = [proj(x) for proj, x in zip(self.input_proj, feats)]
        for k in range(len(feats), self.num_levels):
            levels.append(self.input_proj[k](feats[-1] if k == len(feats) else levels[-1]))
        shapes = [tuple(x.shape[-2:]) for x in levels]
        memory = torch.cat([x.flatten(2).transpose(1, 2) for x in levels], 1)
        return memory, shapes

    def anchors(self, shapes: Sequence[Tuple[int, int]], device=None,
                dtype=torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
        """Anchors in logit space ``(1, L, 4)`` (+inf where invalid) and the valid mask."""
        out = []
        for level, (h, w) in enumerate(shapes):
            ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype),
                                    indexing='ij')
            centre = (torch.stack([xs, ys], -1) + 0.5) / torch.tensor([w, h], dtype=dtype)
            size = torch.full_like(centre, 0.05 * 2.0 ** level)
            out.append(torch.cat([centre, size], -1).reshape(1, h * w, 4))
        anchors = torch.cat(out, 1).to(device)
        valid = ((anchors > self.anchor_eps) & (anchors < 1 - self.anchor_eps)).all(-1, True)
        anchors = torch.where(valid, torch.log(anchors / (1 - anchors)),
                              torch.full_like(anchors, float('inf')))
        return anchors, valid

    def forward_transformer(self, feats: Sequence[torch.Tensor],
                            targets: Optional[Tuple[List[torch.Tensor], List[torch.Tensor]]] = None
                            ) -> Dict[str, torch.Tensor]:
        """Decoder outputs: ``logits`` / ``boxes`` ``(layers, B, N, ...)`` (every layer in
        training, the ``eval_idx`` one otherwise), the encoder's top-k ``enc_logits`` /
        ``enc_boxes``, and ``dn_meta`` (None without denoising). In training with ``targets``
        (labels, normalised (cx, cy, w, h) boxes per image) and denoising on, the denoising
        queries come first (``dn_meta['num_denoising']`` of them)."""
        memory, shapes = self._memory(feats)
        batch = memory.shape[0]
        # an input smaller than the query count (a tiny test image) selects every token
        num_queries = min(self.num_queries, memory.shape[1])
        dn = (self.dn(*targets, num_queries)
              if self.training and self.dn is not None and targets is not None else None)
        anchors, valid = self.anchors(shapes, memory.device, memory.dtype)
        selected = self.enc_output(valid.to(memory.dtype) * memory)
        enc_logits = self.enc_score_head(selected)
        enc_coords = self.enc_bbox_head(selected) + anchors
        topk = enc_logits.max(-1).values.topk(num_queries, dim=1).indices

        def take(x):
            return x.gather(1, topk[..., None].expand(-1, -1, x.shape[-1]))

        ref_unact = take(enc_coords)
        enc_topk_boxes, enc_topk_logits = ref_unact.sigmoid(), take(enc_logits)
        if self.learnt_init_query:
            query = self.tgt_embed.weight[None, :num_queries].expand(batch, -1, -1)
        else:
            query = take(selected).detach()
        attn_mask = None
        if dn is not None:
            dn_query, dn_ref, attn_mask, _ = dn
            query = torch.cat([dn_query, query], 1)
            ref_unact = torch.cat([dn_ref, ref_unact], 1)

        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=memory.device)
        level_start = torch.cat([spatial_shapes.new_zeros(1),
                                 spatial_shapes.prod(1).cumsum(0)[:-1]])
        ref = ref_unact.detach().sigmoid()
        logits, boxes = [], []
        prev_box = None
        for i, layer in enumerate(self.decoder_layers):
            query = layer(query, value=memory, query_pos=self.query_pos_head(ref),
                          self_attn_mask=attn_mask, reference_points=ref[:, :, None],
                          spatial_shapes=spatial_shapes, level_start_index=level_start)
            delta = self.dec_bbox_head[i](query)
            box = (delta + inverse_sigmoid(ref)).sigmoid()
            if self.training:
                logits.append(self.dec_score_head[i](query))
                # from layer 1 on, the supervised box keeps the gradient path through the
                # previous layer's (undetached) box
                boxes.append(box if i == 0 else (delta + inverse_sigmoid(prev_box)).sigmoid())
            elif i == self.eval_idx:
                logits.append(self.dec_score_head[i](query))
                boxes.append(box)
                break
            prev_box = box
            ref = box.detach() if self.training else box
        return dict(logits=torch.stack(logits), boxes=torch.stack(boxes),
                    enc_logits=enc_topk_logits, enc_boxes=enc_topk_boxes,
                    dn_meta=None if dn is None else dn[3])

    def forward(self, feats: Sequence[torch.Tensor], batch_data_samples=None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Class logits and normalised (cx, cy, w, h) boxes of the output layer."""
        out = self.forward_transformer(feats)
        return out['logits'][-1], out['boxes'][-1]

    # ------------------------------------------------------------------ training

    @staticmethod
    def _targets(batch_data_samples) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        labels, boxes = [], []
        for sample in batch_data_samples:
            h, w = sample.metainfo['img_shape'][:2]
            gt = sample.gt_instances
            factor = gt.bboxes.new_tensor([w, h, w, h])
            labels.append(gt.labels.long())
            boxes.append(bbox_xyxy_to_cxcywh(gt.bboxes / factor))
        return labels, boxes

    def loss(self, feats: Sequence[torch.Tensor], batch_data_samples) -> Dict[str, torch.Tensor]:
        gt_labels, gt_boxes = self._targets(batch_data_samples)
        return self.loss_from_targets(feats, gt_labels, gt_boxes)

    def loss_from_targets(self, feats: Sequence[torch.Tensor], gt_labels: List[torch.Tensor],
                          gt_boxes: List[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Losses for ground truth given per image as labels and normalised (cx, cy, w, h)."""
        out = self.forward_transformer(feats, (gt_labels, gt_boxes))
        logits, boxes, meta = out['logits'], out['boxes'], out['dn_meta']
        if meta is not None:
            split = meta['num_denoising']
            dn_logits, logits = logits[:, :, :split], logits[:, :, split:]
            dn_boxes, boxes = boxes[:, :, :split], boxes[:, :, split:]

        device = logits.device
        num_boxes = reduce_mean(torch.tensor(float(sum(len(t) for t in gt_labels)),
                                             device=device)).clamp(min=1).item()
        losses: Dict[str, torch.Tensor] = {}

        def add(prefix: str, cls, box, matches, norm):
            terms = self._layer_loss(cls, box, gt_labels, gt_boxes, matches, norm)
            losses.update({f'{prefix}{k}': v for k, v in terms.items()})

        last = len(logits) - 1
        for i in range(len(logits)):
            matches = self._match(logits[i], boxes[i], gt_labels, gt_boxes)
            add('' if i == last else f'd{i}.', logits[i], boxes[i], matches, num_boxes)
        enc_matches = self._match(out['enc_logits'], out['enc_boxes'], gt_labels, gt_boxes)
        add('enc.', out['enc_logits'], out['enc_boxes'], enc_matches, num_boxes)
        if meta is not None:
            dn_matches = [(idx, torch.arange(len(t), device=device).repeat(meta['num_groups']))
                          for idx, t in zip(meta['positive_idx'], gt_labels)]
            for i in range(len(dn_logits)):
                add(f'dn.d{i}.', dn_logits[i], dn_boxes[i], dn_matches,
                    num_boxes * meta['num_groups'])
        return losses

    @torch.no_grad()
    def _match(self, logits, boxes, gt_labels, gt_boxes) -> List[Tuple[torch.Tensor, ...]]:
        """Hungarian matching per image on normalised boxes: (query indices, gt indices)."""
        matches = []
        for b in range(logits.shape[0]):
            pred = InstanceData(scores=logits[b], bboxes=bbox_cxcywh_to_xyxy(boxes[b]))
            gt = InstanceData(labels=gt_labels[b], bboxes=bbox_cxcywh_to_xyxy(gt_boxes[b]))
            result = self.assigner.assign(pred, gt, img_meta=dict(img_shape=(1, 1)))
            query = torch.nonzero(result.gt_inds > 0).flatten()
            matches.append((query, result.gt_inds[query] - 1))
        return matches

    def _layer_loss(self, logits, boxes, gt_labels, gt_boxes, matches, num_boxes):
        batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)])
        query_idx = torch.cat([q for q, _ in matches])
        src = boxes[batch_idx, query_idx]
        tgt = torch.cat([gt_boxes[b][g] for b, (_, g) in enumerate(matches)])
        labels = torch.cat([gt_labels[b][g] for b, (_, g) in enumerate(matches)])
        src_xyxy, tgt_xyxy = bbox_cxcywh_to_xyxy(src), bbox_cxcywh_to_xyxy(tgt)
        iou = bbox_overlaps(src_xyxy, tgt_xyxy, is_aligned=True).detach()
        positive = torch.zeros_like(logits)
        positive[batch_idx, query_idx, labels] = 1.0
        scores = torch.zeros_like(logits)
        scores[batch_idx, query_idx, labels] = iou.to(logits.dtype)
        return dict(loss_vfl=self.loss_cls(logits, scores, positive, avg_factor=num_boxes),
                    loss_bbox=self.loss_bbox(src, tgt, avg_factor=num_boxes),
                    loss_giou=self.loss_iou(src_xyxy, tgt_xyxy, avg_factor=num_boxes))

    # ------------------------------------------------------------------ inference

    def predict(self, feats: Sequence[torch.Tensor], batch_data_samples,
                rescale: bool = True) -> List[InstanceData]:
        logits, boxes = self.forward(feats)
        metas = [s.metainfo for s in batch_data_samples]
        return self.predict_by_feat(logits, boxes, metas, rescale)

    def predict_by_feat(self, logits: torch.Tensor, boxes: torch.Tensor, metas: List[dict],
                        rescale: bool = True) -> List[InstanceData]:
        """Top-k over the sigmoid scores of every (query, class) pair; boxes in pixels of
        ``img_shape`` (divided by ``scale_factor`` when ``rescale``), not clipped."""
        num = min(self.test_cfg.get('max_per_img', self.num_queries), logits[0].numel())
        results = []
        for cls, box, meta in zip(logits, boxes, metas):
            scores, index = cls.sigmoid().flatten().topk(num)
            h, w = meta['img_shape'][:2]
            bboxes = bbox_cxcywh_to_xyxy(box[index // self.num_classes]) * box.new_tensor(
                [w, h, w, h])
            if rescale and 'scale_factor' in meta:
                bboxes = bboxes / bboxes.new_tensor(meta['scale_factor']).repeat(2)
            results.append(InstanceData(scores=scores, labels=index % self.num_classes,
                                        bboxes=bboxes))
        return results


def _copy(cfg: dict) -> dict:
    return {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
