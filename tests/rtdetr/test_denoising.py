# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Contrastive denoising: group layout, attention mask (functionally, through a decoder layer)
and the distribution of the noise, against RT-DETR's stated semantics."""
import pytest
import torch
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy

from mmbackbones.models.rtdetr import ContrastiveDenoising, RTDETRHead

NUM_CLASSES, DIMS = 5, 16


def gts(counts, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = [torch.randint(0, NUM_CLASSES, (n, ), generator=g) for n in counts]
    # centred boxes small enough that no noise reaches the image border (no clipping)
    boxes = [torch.cat([0.4 + 0.2 * torch.rand(n, 2, generator=g),
                        0.1 + 0.1 * torch.rand(n, 2, generator=g)], 1) for n in counts]
    return labels, boxes


@pytest.mark.parametrize('counts,num_dn,groups', [([2, 3], 100, 33), ([3, 0], 10, 3),
                                                  ([7, 1], 5, 1)])
def test_group_count_and_sizes(counts, num_dn, groups):
    dn = ContrastiveDenoising(NUM_CLASSES, DIMS, num_dn)
    labels, boxes = gts(counts)
    queries, ref, mask, meta = dn(labels, boxes, num_queries=20)
    max_gts = max(counts)
    total = 2 * max_gts * groups
    assert meta['num_groups'] == groups and meta['num_denoising'] == total
    assert queries.shape == (len(counts), total, DIMS) and ref.shape == (len(counts), total, 4)
    assert mask.shape == (total + 20, total + 20)
    for n, idx in zip(counts, meta['positive_idx']):
        expected = [g * 2 * max_gts + j for g in range(groups) for j in range(n)]
        assert idx.tolist() == expected


def test_nothing_to_denoise():
    dn = ContrastiveDenoising(NUM_CLASSES, DIMS, 100)
    assert dn([torch.zeros(0, dtype=torch.long)] * 2, [torch.zeros(0, 4)] * 2, 20) is None
    assert ContrastiveDenoising(NUM_CLASSES, DIMS, 0)(*gts([2]), 20) is None


def test_mask_blocks_exactly_other_groups_and_denoising_for_matching():
    dn = ContrastiveDenoising(NUM_CLASSES, DIMS, 9)
    _, _, mask, meta = dn(*gts([3, 2]), num_queries=7)
    total, per_group = meta['num_denoising'], 2 * meta['max_gts']
    for i in range(total + 7):
        for j in range(total + 7):
            if i >= total:  # matching queries: see only matching queries
                assert mask[i, j] == (j < total)
            elif j >= total:  # denoising queries see the matching ones
                assert not mask[i, j]
            else:
                assert mask[i, j] == (i // per_group != j // per_group)


def test_mask_leaks_nothing_through_a_decoder_layer():
    """Changing one group's queries changes no other group's and no matching query's output."""
    torch.manual_seed(0)
    head = RTDETRHead(num_classes=NUM_CLASSES, in_channels=[DIMS], num_levels=1, embed_dims=DIMS,
                      num_heads=2, num_queries=6, num_decoder_layers=1, feedforward_channels=32,
                      num_denoising=8).eval()
    queries, ref_unact, mask, meta = head.dn(*gts([2, 1]), num_queries=6)
    total, per_group = meta['num_denoising'], 2 * meta['max_gts']
    q = torch.cat([queries, torch.randn(2, 6, DIMS)], 1)
    ref = torch.cat([ref_unact, torch.zeros(2, 6, 4)], 1).sigmoid()
    memory = torch.randn(2, 4 * 4, DIMS)
    shapes = torch.tensor([[4, 4]])
    start = torch.tensor([0])

    def run(x):
        return head.decoder_layers[0](x, value=memory, query_pos=head.query_pos_head(ref),
                                      self_attn_mask=mask, reference_points=ref[:, :, None],
                                      spatial_shapes=shapes, level_start_index=start)

    with torch.no_grad():
        base = run(q)
        changed = q.clone()
        changed[:, per_group:2 * per_group] += torch.randn(2, per_group, DIMS)  # group 1
        out = run(changed)
    untouched = [i for i in range(total + 6) if not per_group <= i < 2 * per_group]
    assert torch.allclose(out[:, untouched], base[:, untouched], atol=1e-6)
    assert not torch.allclose(out[:, per_group:2 * per_group], base[:, per_group:2 * per_group])


def test_noise_distribution():
    torch.manual_seed(0)
    dn = ContrastiveDenoising(NUM_CLASSES, DIMS, 1000, label_noise_ratio=0.5, box_noise_scale=1.0)
    labels, boxes = gts([4, 2], seed=1)
    _, ref_unact, _, meta = dn(labels, boxes, num_queries=1)
    max_gts, groups = meta['max_gts'], meta['num_groups']
    noisy_labels = meta['labels'].view(2, groups, 2, max_gts)
    noisy_corners = bbox_cxcywh_to_xyxy(meta['boxes']).view(2, groups, 2, max_gts, 4)
    flips, count = 0, 0
    pos_shift, neg_shift = [], []
    for b, n in enumerate([4, 2]):
        half = boxes[b][:, 2:].repeat(1, 2) * 0.5
        corners = bbox_cxcywh_to_xyxy(boxes[b])
        flips += (noisy_labels[b, :, :, :n] != labels[b]).sum().item()
        count += noisy_labels[b, :, :, :n].numel()
        pos_shift.append(((noisy_corners[b, :, 0, :n] - corners) / half).abs())
        neg_shift.append(((noisy_corners[b, :, 1, :n] - corners) / half).abs())
        # padded slots keep the padding label and the zero box
        assert (noisy_labels[b, :, :, n:] == NUM_CLASSES).all()
        assert torch.allclose(ref_unact.view(2, groups, 2, max_gts, 4)[b, :, :, n:],
                              torch.tensor(1e-5).log())
    # a label is redrawn with probability 0.25 and then differs with probability 4/5
    assert abs(flips / count - 0.25 * (NUM_CLASSES - 1) / NUM_CLASSES) < 0.03
    pos = torch.cat([p.flatten() for p in pos_shift])
    neg = torch.cat([n.flatten() for n in neg_shift])
    assert pos.max() < 1 + 1e-3 and neg.min() > 1 - 1e-3 and neg.max() < 2 + 1e-3
    assert abs(pos.mean().item() - 0.5) < 0.03 and abs(neg.mean().item() - 1.5) < 0.03


def test_denoising_losses_on_every_layer():
    torch.manual_seed(0)
    head = RTDETRHead(num_classes=NUM_CLASSES, in_channels=[DIMS, DIMS], num_levels=2,
                      embed_dims=DIMS, num_heads=2, num_queries=8, num_decoder_layers=2,
                      feedforward_channels=32, num_denoising=10)
    head.init_weights()
    head.train()
    feats = [torch.randn(2, DIMS, 8, 6), torch.randn(2, DIMS, 4, 3)]
    losses = head.loss_from_targets(feats, *gts([2, 1]))
    for i in range(2):
        for term in ('loss_vfl', 'loss_bbox', 'loss_giou'):
            assert torch.isfinite(losses[f'dn.d{i}.{term}'])
    sum(losses.values()).backward()
    assert head.dn.label_embedding.weight.grad is not None
    # the padding row of the label embedding stays zero and gets no gradient
    assert not head.dn.label_embedding.weight.grad[NUM_CLASSES].any()
