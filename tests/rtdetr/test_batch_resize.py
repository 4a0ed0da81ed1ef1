# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""RTDETRBatchRandomResize: one size per batch from the official list, boxes and metainfo
rescaled so that img_shape-normalised boxes are unchanged, no-op in eval, ranks agree, and a real
RT-DETR loss step through mmdet's data preprocessor."""
import doctest
import subprocess
import sys
from collections import Counter

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import mmbackbones  # noqa: F401
from mmbackbones.models.rtdetr import RTDETR_SIZES, RTDETRBatchRandomResize, RTDETRHead
from mmbackbones.models.rtdetr import batch_resize
from tests.paths import REPO

MODULE = REPO / 'mmbackbones' / 'models' / 'rtdetr' / 'batch_resize.py'
OFFICIAL_SIZES = [480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800]


def make_samples(hw=(64, 64), img_shapes=None, n=2, seed=0, box_type=None):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        img_hw = img_shapes[i] if img_shapes else hw
        s = DetDataSample(metainfo=dict(img_shape=img_hw, ori_shape=(2 * img_hw[0], img_hw[1]),
                                        scale_factor=(1.0, 0.5), pad_shape=hw,
                                        batch_input_shape=hw))
        xy = torch.rand(3, 2, generator=g) * 20
        boxes = torch.cat([xy, xy + 5 + 10 * torch.rand(3, 2, generator=g)], 1)
        s.gt_instances = InstanceData(bboxes=box_type(boxes) if box_type else boxes,
                                      labels=torch.tensor([0, 1, 2]))
        s.ignored_instances = InstanceData(bboxes=boxes[:1].clone(), labels=torch.tensor([3]))
        out.append(s)
    return out


def boxes_of(sample, field='gt_instances'):
    b = sample.get(field).bboxes
    return b.tensor if isinstance(b, HorizontalBoxes) else b


def test_official_size_list():
    assert list(RTDETR_SIZES) == OFFICIAL_SIZES
    assert list(RTDETRBatchRandomResize().sizes) == OFFICIAL_SIZES


def test_docstring_example():
    result = doctest.testmod(batch_resize, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_sizes_come_from_the_list_with_its_weights():
    aug = RTDETRBatchRandomResize(seed=0)
    draws = [aug.draw_size() for _ in range(2600)]
    counts = Counter(draws)
    assert set(counts) == set(OFFICIAL_SIZES)
    # 640 is listed 3 times of 13: expected 600 of 2600, the others 200 (std ~ 21 and ~ 14)
    assert 510 < counts[640] < 690
    assert all(130 < counts[s] < 270 for s in set(OFFICIAL_SIZES) - {640})


def test_whole_batch_resized_to_one_square_size_and_boxes_scaled_exactly():
    aug = RTDETRBatchRandomResize(sizes=[96], seed=0).train()
    inputs = torch.rand(2, 3, 64, 80)
    samples = make_samples(hw=(64, 80))
    before = [boxes_of(s).clone() for s in samples]
    ignored = [boxes_of(s, 'ignored_instances').clone() for s in samples]
    _, norm_before = RTDETRHead._targets(samples)
    out, samples = aug(inputs, samples)
    assert out.shape == (2, 3, 96, 96)
    _, norm_after = RTDETRHead._targets(samples)
    scale = torch.tensor([96 / 80, 96 / 64, 96 / 80, 96 / 64])
    for s, b, ign, nb, na in zip(samples, before, ignored, norm_before, norm_after):
        assert s.img_shape == (96, 96) and s.pad_shape == (96, 96)
        assert s.batch_input_shape == (96, 96)
        assert s.ori_shape == (128, 80)  # untouched
        assert s.scale_factor == pytest.approx((96 / 80, 0.5 * 96 / 64))
        torch.testing.assert_close(boxes_of(s), b * scale)
        torch.testing.assert_close(boxes_of(s, 'ignored_instances'), ign * scale)
        # the head's targets (cxcywh normalised by img_shape) do not move
        torch.testing.assert_close(na, nb, rtol=0, atol=1e-6)


def test_padded_images_keep_their_share_of_the_canvas():
    """An image smaller than the padded batch: its img_shape and boxes scale with the canvas."""
    aug = RTDETRBatchRandomResize(sizes=[128], seed=0).train()
    samples = make_samples(hw=(64, 64), img_shapes=[(64, 64), (48, 32)])
    before = [boxes_of(s).clone() for s in samples]
    _, norm_before = RTDETRHead._targets(samples)
    out, samples = aug(torch.rand(2, 3, 64, 64), samples)
    assert out.shape == (2, 3, 128, 128)
    assert [s.img_shape for s in samples] == [(128, 128), (96, 64)]
    for s, b in zip(samples, before):
        torch.testing.assert_close(boxes_of(s), b * 2)
    _, norm_after = RTDETRHead._targets(samples)
    for nb, na in zip(norm_before, norm_after):
        torch.testing.assert_close(na, nb, rtol=0, atol=1e-6)


def test_mmdet_box_type_is_kept_and_scaled():
    """mmdet's preprocessor turns boxes into tensors first; a HorizontalBoxes works too."""
    aug = RTDETRBatchRandomResize(sizes=[128], seed=0).train()
    samples = make_samples(hw=(64, 64), box_type=HorizontalBoxes)
    before = [boxes_of(s).clone() for s in samples]
    _, samples = aug(torch.rand(2, 3, 64, 64), samples)
    for s, b in zip(samples, before):
        assert isinstance(s.gt_instances.bboxes, HorizontalBoxes)
        torch.testing.assert_close(boxes_of(s), b * 2)


def test_resized_pixels_match_interpolate():
    inputs = torch.rand(1, 3, 32, 32)
    for mode in ('nearest', 'bilinear'):
        aug = RTDETRBatchRandomResize(sizes=[48], interpolation=mode, seed=0).train()
        out, _ = aug(inputs.clone(), make_samples(hw=(32, 32), n=1))
        kwargs = {} if mode == 'nearest' else dict(align_corners=False)
        torch.testing.assert_close(
            out, torch.nn.functional.interpolate(inputs, size=(48, 48), mode=mode, **kwargs))


def test_eval_mode_and_the_eval_preprocessor_leave_the_batch_alone():
    aug = RTDETRBatchRandomResize(sizes=[96], seed=0).eval()
    inputs = torch.rand(2, 3, 64, 64)
    samples = make_samples()
    before = [boxes_of(s).clone() for s in samples]
    out, samples = aug(inputs, samples)
    assert out is inputs
    assert all(s.img_shape == (64, 64) for s in samples)
    assert all(torch.equal(boxes_of(s), b) for s, b in zip(samples, before))

    init_default_scope('mmdet')
    pre = MODELS.build(dict(type='DetDataPreprocessor', mean=[0., 0., 0.], std=[255.] * 3,
                            pad_size_divisor=32,
                            batch_augments=[dict(type='RTDETRBatchRandomResize', sizes=[96])]))
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)],
                data_samples=make_samples(n=1))
    assert pre(data, training=False)['inputs'].shape == (1, 3, 64, 64)
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)],
                data_samples=make_samples(n=1))
    out = pre(data, training=True)
    assert out['inputs'].shape == (1, 3, 96, 96)
    assert out['data_samples'][0].img_shape == (96, 96)


def test_stop_epoch_reads_the_runtime_epoch(monkeypatch):
    aug = RTDETRBatchRandomResize(sizes=[96], stop_epoch=3, seed=0).train()
    hub = MessageHub('test_rtdetr_batch_resize_stop_epoch')
    monkeypatch.setattr(MessageHub, 'get_current_instance', classmethod(lambda cls: hub))
    assert aug(torch.rand(1, 3, 64, 64), make_samples(n=1))[0].shape[-1] == 96  # no epoch
    hub.update_info('epoch', 2)
    assert aug(torch.rand(1, 3, 64, 64), make_samples(n=1))[0].shape[-1] == 96
    hub.update_info('epoch', 3)
    assert aug(torch.rand(1, 3, 64, 64), make_samples(n=1))[0].shape[-1] == 64


def test_same_seed_same_sequence():
    a, b = RTDETRBatchRandomResize(seed=7), RTDETRBatchRandomResize(seed=7)
    seq_a, seq_b = [a.draw_size() for _ in range(50)], [b.draw_size() for _ in range(50)]
    assert seq_a == seq_b
    c = RTDETRBatchRandomResize(seed=8)
    assert [c.draw_size() for _ in range(50)] != seq_a


# The module is loaded from its file (it has no package-relative imports) to spare each rank
# the import of all of mmbackbones.
RANK_SCRIPT = r'''
import importlib.util, os, sys
import numpy as np
import torch.distributed as dist
np.random.seed(100 + int(os.environ['RANK']))  # unseeded draws would differ between ranks
dist.init_process_group('gloo')
spec = importlib.util.spec_from_file_location('batch_resize', sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
aug = module.RTDETRBatchRandomResize()  # seed=None: rank 0's seed, broadcast once
print('SIZES', dist.get_rank(), [aug.draw_size() for _ in range(40)], flush=True)
dist.destroy_process_group()
'''


def test_ranks_draw_the_same_sizes_without_a_seed(tmp_path, tool_env, free_port):
    script = tmp_path / 'rank.py'
    script.write_text(RANK_SCRIPT)
    procs = []
    for rank in range(2):
        env = dict(tool_env, RANK=str(rank), WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
                   MASTER_PORT=str(free_port))
        procs.append(subprocess.Popen([sys.executable, str(script), str(MODULE)], cwd=str(REPO),
                                      env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    sizes = [[line for line in out.splitlines() if line.startswith('SIZES')][0] for out in outs]
    seqs = [eval(line.split(' ', 2)[2]) for line in sizes]  # a printed list of ints
    assert seqs[0] == seqs[1]
    assert set(seqs[0]) <= set(OFFICIAL_SIZES) and len(set(seqs[0])) > 3


@pytest.mark.parametrize('kwargs,words', [
    (dict(sizes=[]), ['sizes=[]', 'positive ints']),
    (dict(sizes=[640, 0]), ['sizes=[640, 0]', 'positive ints']),
    (dict(sizes=[640.0]), ['sizes=[640.0]']),
    (dict(sizes='640'), ["sizes='640'"]),
    (dict(interpolation='linear'), ["interpolation='linear'", 'nearest, bilinear, bicubic, area']),
    (dict(stop_epoch=-1), ['stop_epoch=-1', 'int >= 0']),
    (dict(stop_epoch=7.5), ['stop_epoch=7.5']),
    (dict(seed='0'), ["seed='0'", 'an int']),
])
def test_bad_arguments_raise_clearly(kwargs, words):
    with pytest.raises(ValueError) as err:
        RTDETRBatchRandomResize(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_real_model_loss_step_through_the_preprocessor():
    """The tiny RT-DETR trains one step on a resized batch (denoising on) and its targets are
    the ones the unresized batch gives."""
    torch.manual_seed(0)
    init_default_scope('mmdet')
    cfg = Config.fromfile(str(REPO / 'configs' / 'rtdetr' / 'rtdetr_vovnet-19-slim-dw-ese_demo.py'))
    cfg.model.data_preprocessor.batch_augments = [
        dict(type='RTDETRBatchRandomResize', sizes=[96, 160], seed=1)]
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    samples = make_samples(hw=(128, 96), n=2)
    _, expected = RTDETRHead._targets(samples)
    inputs = [torch.randint(0, 255, (3, 128, 96), dtype=torch.uint8) for _ in range(2)]
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
    size = data['inputs'].shape[-1]
    assert size in (96, 160) and data['inputs'].shape == (2, 3, size, size)
    assert all(s.img_shape == (size, size) for s in data['data_samples'])
    _, targets = RTDETRHead._targets(data['data_samples'])
    for t, e in zip(targets, expected):
        torch.testing.assert_close(t, e, rtol=0, atol=1e-6)
    losses = model(**data, mode='loss')
    assert any(k.startswith('dn.') for k in losses) and 'loss_vfl' in losses
    assert all(torch.isfinite(v).all() for v in losses.values())
    total, _ = model.parse_losses(losses)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
