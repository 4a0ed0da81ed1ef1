# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""RT-DETR's contrastive denoising queries (noised ground truth fed to the decoder in training).

Differs from mmdet's ``CdnQueryGenerator`` where RT-DETR checkpoints and training depend on it:
the label embedding has a padding row (``num_classes + 1`` rows, the official weight layout),
padded slots keep the zero box, which enters the decoder as ``inverse_sigmoid(0)``, and the
inverse sigmoid uses eps 1e-5 (mmdet: 1e-3).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_xyxy_to_cxcywh
from torch import nn


class ContrastiveDenoising(nn.Module):
    """Builds the denoising queries, their reference boxes and the self-attention mask.

    With ``M`` the most ground-truth boxes of an image in the batch, there are
    ``G = max(num_denoising // M, 1)`` groups of ``2 M`` queries: ``M`` positive (box noise below
    half the box size) and then ``M`` negative (noise between one and two half sizes) copies of
    the padded ground truth. A fraction ``label_noise_ratio / 2`` of the labels is replaced by a
    random class. Mask (True = blocked): matching queries see no denoising query; a denoising
    group sees only itself and the matching queries.

    Args:
        num_classes (int): Object classes.
        embed_dims (int): Query width.
        num_denoising (int): Target number of denoising queries; 0 disables denoising.
        label_noise_ratio (float): Twice the probability of a label flip. Default: 0.5.
        box_noise_scale (float): Noise magnitude in half box sizes. Default: 1.0.
    """

    def __init__(self, num_classes: int, embed_dims: int, num_denoising: int = 100,
                 label_noise_ratio: float = 0.5, box_noise_scale: float = 1.0) -> None:
        super().__init__()
        if num_denoising < 0 or not 0 <= label_noise_ratio <= 1 or box_noise_scale < 0:
            raise ValueError(f'ContrastiveDenoising: need num_denoising >= 0, 0 <= '
                             f'label_noise_ratio <= 1 and box_noise_scale >= 0, got '
                             f'{num_denoising}, {label_noise_ratio}, {box_noise_scale}.')
        self.num_classes = num_classes
        self.num_denoising = num_denoising
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        self.label_embedding = nn.Embedding(num_classes + 1, embed_dims, padding_idx=num_classes)

    def forward(self, gt_labels: Sequence[torch.Tensor], gt_boxes: Sequence[torch.Tensor],
                num_queries: int
                ) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Dict]]:
        """``gt_boxes`` per image in normalised (cx, cy, w, h). Returns None when there is
        nothing to denoise, else (queries ``(B, N, D)``, reference boxes before the sigmoid
        ``(B, N, 4)``, attention mask ``(N + num_queries,) * 2``, meta)."""
        num_gts = [len(labels) for labels in gt_labels]
        max_gts = max(num_gts, default=0)
        if self.num_denoising <= 0 or max_gts == 0:
            return None
        device = self.label_embedding.weight.device
        batch = len(num_gts)
        groups = max(self.num_denoising // max_gts, 1)
        per_group = 2 * max_gts
        total = per_group * groups

        labels = torch.full((batch, max_gts), self.num_classes, dtype=torch.long, device=device)
        boxes = torch.zeros(batch, max_gts, 4, device=device)
        valid = torch.zeros(batch, max_gts, dtype=torch.bool, device=device)
        for i, n in enumerate(num_gts):
            labels[i, :n] = gt_labels[i]
            boxes[i, :n] = gt_boxes[i]
            valid[i, :n] = True
        labels = labels.repeat(1, 2 * groups)
        boxes = boxes.repeat(1, 2 * groups, 1)
        valid = valid.repeat(1, 2 * groups)
        slot = torch.arange(total, device=device)
        negative = ((slot % per_group) >= max_gts).float()[None, :, None]

        if self.label_noise_ratio > 0:
            flip = (torch.rand(labels.shape, device=device) < self.label_noise_ratio * 0.5) & valid
            random_labels = torch.randint(0, self.num_classes, labels.shape, device=device)
            labels = torch.where(flip, random_labels, labels)

        if self.box_noise_scale > 0:
            corners = bbox_cxcywh_to_xyxy(boxes)
            half_size = boxes[..., 2:].repeat(1, 1, 2) * 0.5 * self.box_noise_scale
            magnitude = torch.rand_like(boxes) + negative  # [0, 1) positive, [1, 2) negative
            sign = torch.randint(0, 2, boxes.shape, device=device).float() * 2 - 1
            corners = (corners + sign * magnitude * half_size).clamp(0.0, 1.0)
            boxes = bbox_xyxy_to_cxcywh(corners)
        ref_unact = inverse_sigmoid(boxes, eps=1e-5)

        queries = self.label_embedding(labels)
        mask = torch.zeros(total + num_queries, total + num_queries, dtype=torch.bool,
                           device=device)
        mask[total:, :total] = True
        group_of = slot // per_group
        mask[:total, :total] = group_of[:, None] != group_of[None, :]

        positive_idx: List[torch.Tensor] = [
            (torch.arange(n, device=device)[None] + per_group * torch.arange(
                groups, device=device)[:, None]).flatten() for n in num_gts]
        # labels / boxes: the noised ground truth (boxes in cx, cy, w, h before the inverse
        # sigmoid; a negative may have turned inside out, w or h < 0, which the sigmoid clips)
        meta = dict(num_groups=groups, num_denoising=total, max_gts=max_gts,
                    positive_idx=positive_idx, labels=labels, boxes=boxes)
        return queries, ref_unact, mask, meta
