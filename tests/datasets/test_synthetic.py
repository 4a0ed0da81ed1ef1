# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Tests of the deterministic synthetic demo data set (mmbackbones.datasets.synthetic).

Everything runs on real files in tmp_path: real pycocotools, real mmdet datasets, pipelines and
CocoMetric, no mocks.
"""
import json
import os
import runpy
import subprocess
import sys
from itertools import combinations

import numpy as np
import pytest
from PIL import Image

from mmbackbones.datasets.synthetic import (DEMO_CLASSES, DEMO_PALETTE, DemoShapesDataset,
                                            main, make_demo_dataset)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A small set used by the read-only tests; the promised ranges are those of the defaults.
SMALL = dict(num_train=24, num_val=8, seed=0, progress=False)
MIN_SIZE, MAX_SIZE, MAX_ASPECT, MAX_OCCLUSION = 12, 115, 2.5, 0.3  # defaults at 256 x 256


def _tree(root):
    """{relative path: bytes} of every file under root."""
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def _load(path):
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp('demo'), **SMALL)


# --------------------------------------------------------------------------- determinism
def test_same_parameters_give_byte_identical_files(tmp_path, demo):
    again = make_demo_dataset(tmp_path / 'again', **SMALL)
    assert again['generated']
    first, second = _tree(demo['root']), _tree(again['root'])
    assert sorted(first) == sorted(second)
    assert len([p for p in first if p.endswith('.png')]) == SMALL['num_train'] + SMALL['num_val']
    for rel in first:
        assert first[rel] == second[rel], rel


def test_other_seed_gives_other_data(tmp_path, demo):
    other = make_demo_dataset(tmp_path / 'seed1', **dict(SMALL, seed=1))
    a, b = _tree(demo['root']), _tree(other['root'])
    assert a['annotations/instances_train.json'] != b['annotations/instances_train.json']
    images = [p for p in a if p.endswith('.png')]
    assert all(a[p] != b[p] for p in images)


def test_train_and_val_are_different_streams(demo):
    train = Image.open(os.path.join(demo['train_img_dir'], '000000.png'))
    val = Image.open(os.path.join(demo['val_img_dir'], '000000.png'))
    assert not np.array_equal(np.asarray(train), np.asarray(val))


def test_prefix_of_a_larger_set_is_identical(tmp_path):
    small = make_demo_dataset(tmp_path / 'n', num_train=5, num_val=2, progress=False)
    large = make_demo_dataset(tmp_path / 'nk', num_train=8, num_val=4, progress=False)
    for split, n in (('train', 5), ('val', 2)):
        for i in range(n):
            name = f'{i:06d}.png'
            with open(os.path.join(small[f'{split}_img_dir'], name), 'rb') as f1, \
                    open(os.path.join(large[f'{split}_img_dir'], name), 'rb') as f2:
                assert f1.read() == f2.read(), (split, name)
        a, b = _load(small[f'{split}_ann_file']), _load(large[f'{split}_ann_file'])
        assert b['images'][:n] == a['images']
        assert [x for x in b['annotations'] if x['image_id'] <= n] == a['annotations']
        assert len(b['images']) > n


# --------------------------------------------------------------------------- content
@pytest.mark.parametrize('split', ['train', 'val'])
def test_pycocotools_reads_valid_annotations(demo, split):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    coco = COCO(demo[f'{split}_ann_file'])
    num = SMALL[f'num_{split}']
    assert sorted(coco.getImgIds()) == list(range(1, num + 1))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(DEMO_CLASSES)
    assert coco.getCatIds() == list(range(1, len(DEMO_CLASSES) + 1))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len({a['id'] for a in anns}) == len(anns)
    for img in coco.loadImgs(coco.getImgIds()):
        with Image.open(os.path.join(demo[f'{split}_img_dir'], img['file_name'])) as im:
            assert im.size == (img['width'], img['height']) == (256, 256)
            assert im.mode == 'RGB'
    for a in anns:
        x, y, w, h = a['bbox']
        assert all(isinstance(v, float) for v in a['bbox'])
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 256 and y + h <= 256
        assert 0 < a['area'] <= w * h
        assert a['iscrowd'] == 0
        poly = a['segmentation']
        assert isinstance(poly, list) and len(poly) == 1 and len(poly[0]) >= 6
        px, py = poly[0][0::2], poly[0][1::2]
        # The polygon outlines the whole shape, so it contains the visible box.
        assert min(px) <= x + 1e-6 and min(py) <= y + 1e-6
        assert max(px) >= x + w - 1e-6 and max(py) >= y + h - 1e-6
        rle = coco.annToRLE(a)  # pycocotools rasterises the polygon
        assert tuple(rle['size']) == (256, 256) and mask_utils.area(rle) > 0
    if split == 'train':
        assert {a['category_id'] for a in anns} == set(range(1, len(DEMO_CLASSES) + 1))
        assert len(anns) / num >= 3.0
    else:
        assert len(anns) / num >= 2.0


def test_scale_and_aspect_ratio_span_the_documented_ranges(demo):
    anns = _load(demo['train_ann_file'])['annotations'] + _load(demo['val_ann_file'])['annotations']
    sides = [s for a in anns for s in a['bbox'][2:]]
    ratios = [a['bbox'][2] / a['bbox'][3] for a in anns]
    # Every box respects the ranges (visible boxes included) ...
    assert min(sides) >= MIN_SIZE and max(sides) <= MAX_SIZE
    assert min(ratios) >= 1 / MAX_ASPECT - 1e-9 and max(ratios) <= MAX_ASPECT + 1e-9
    # ... and the data really spans them: tiny and ~45%-of-image objects, stretched both ways.
    assert min(sides) <= MIN_SIZE + 2
    assert max(sides) >= 0.85 * MAX_SIZE
    assert max(ratios) >= 0.8 * MAX_ASPECT
    assert min(ratios) <= 1 / (0.8 * MAX_ASPECT)
    small = [a for a in anns if max(a['bbox'][2:]) <= 24]
    large = [a for a in anns if max(a['bbox'][2:]) >= 80]
    assert len(small) >= 5 and len(large) >= 5
    # The summary reports the same measurements.
    stats = demo['stats']['train']
    train = _load(demo['train_ann_file'])['annotations']
    assert stats['objects'] == len(train)
    assert stats['box_side']['min'] == min(s for a in train for s in a['bbox'][2:])
    assert stats['box_side']['max'] == max(s for a in train for s in a['bbox'][2:])
    assert sum(stats['objects_per_class'].values()) == len(train)


def _polygon_area(flat):
    xs, ys = flat[0::2], flat[1::2]
    return 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))


def test_objects_overlap_but_stay_mostly_visible(demo):
    coco = _load(demo['train_ann_file'])
    by_image = {}
    for a in coco['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    ious = [_iou(a['bbox'], b['bbox']) for anns in by_image.values()
            for a, b in combinations(anns, 2)]
    assert sum(i > 0 for i in ious) >= 5
    assert demo['stats']['train']['overlapping_box_pairs'] == sum(i > 0 for i in ious)
    assert demo['stats']['train']['occluded_objects'] >= 3
    ring = DEMO_CLASSES.index('ring') + 1
    ratios = [a['area'] / _polygon_area(a['segmentation'][0]) for a in coco['annotations']
              if a['category_id'] != ring]
    # Visible pixels vs. the area of the full outline: occluded objects lose at most
    # MAX_OCCLUSION of their pixels (the margin covers rasterisation of small shapes).
    assert min(ratios) >= (1 - MAX_OCCLUSION) * 0.85
    assert min(ratios) < 0.97  # and some really are partly hidden


def test_clean_background_knob(tmp_path):
    clean = make_demo_dataset(tmp_path / 'clean', num_train=2, num_val=0, clutter=0.0,
                              progress=False)
    busy = make_demo_dataset(tmp_path / 'busy', num_train=2, num_val=0, clutter=1.0,
                             progress=False)

    def roughness(root):
        img = np.asarray(Image.open(os.path.join(root, 'train', '000000.png')), np.float64)
        return np.abs(np.diff(img, axis=1)).mean()

    assert roughness(clean['root']) < roughness(busy['root'])
    assert clean['stats']['val']['images'] == 0


# --------------------------------------------------------------------------- mmdet
def _pipeline():
    return [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs'),
    ]


@pytest.mark.parametrize('dataset_type', ['CocoDataset', 'DemoShapesDataset'])
def test_mmdet_dataset_loads_it(demo, dataset_type):
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    init_default_scope('mmdet')
    cfg = dict(
        type=dataset_type, data_root=demo['root'], ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'), pipeline=_pipeline())
    if dataset_type == 'CocoDataset':  # plain CocoDataset needs to be told the class names
        cfg['metainfo'] = dict(classes=DEMO_CLASSES)
    dataset = DATASETS.build(cfg)
    if dataset_type == 'DemoShapesDataset':
        assert isinstance(dataset, DemoShapesDataset)
        assert DATASETS.get('DemoShapesDataset') is DemoShapesDataset
        assert tuple(dataset.metainfo['classes']) == DEMO_CLASSES
        assert [tuple(c) for c in dataset.metainfo['palette']] == DEMO_PALETTE
    assert len(dataset) == SMALL['num_train']

    coco = _load(demo['train_ann_file'])
    total = 0
    for i in range(len(dataset)):
        item = dataset[i]
        sample = item['data_samples']
        assert tuple(item['inputs'].shape) == (3, 256, 256)
        image_id = sample.img_id
        expected = [a for a in coco['annotations'] if a['image_id'] == image_id]
        boxes = sample.gt_instances.bboxes.tensor.numpy()
        labels = sample.gt_instances.labels.numpy()
        assert len(boxes) == len(expected) > 0
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in expected)])
        np.testing.assert_allclose(boxes, xyxy)
        assert labels.tolist() == [a['category_id'] - 1 for a in expected]
        total += len(boxes)
    assert total == len(coco['annotations'])


def _metric_on(ann_file, shift):
    import torch
    from mmdet.evaluation import CocoMetric

    coco = _load(ann_file)
    metric = CocoMetric(ann_file=ann_file, metric='bbox')
    metric.dataset_meta = dict(classes=DEMO_CLASSES)
    samples = []
    for img in coco['images']:
        anns = [a for a in coco['annotations'] if a['image_id'] == img['id']]
        boxes = torch.tensor([[x + shift * w, y, x + w + shift * w, y + h]
                              for x, y, w, h in (a['bbox'] for a in anns)], dtype=torch.float32)
        samples.append(dict(
            img_id=img['id'], ori_shape=(img['height'], img['width']),
            pred_instances=dict(
                bboxes=boxes, scores=torch.ones(len(anns)),
                labels=torch.tensor([a['category_id'] - 1 for a in anns]))))
    metric.process({}, samples)
    return metric.evaluate(size=len(samples))


def test_coco_metric_reads_the_ground_truth(demo):
    perfect = _metric_on(demo['val_ann_file'], shift=0.0)
    assert perfect['coco/bbox_mAP'] == pytest.approx(1.0)
    assert perfect['coco/bbox_mAP_50'] == pytest.approx(1.0)
    # Boxes moved by half their width overlap the truth with IoU 1/3: below every threshold.
    shifted = _metric_on(demo['val_ann_file'], shift=0.5)
    assert shifted['coco/bbox_mAP'] < 0.05
    assert shifted['coco/bbox_mAP'] < perfect['coco/bbox_mAP'] - 0.9


# --------------------------------------------------------------------------- re-runs
def _mtimes(root):
    out = {}
    for dirpath, dirnames, names in os.walk(root):
        for name in names + dirnames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = os.stat(path).st_mtime_ns
    return out


def test_second_call_reuses_without_writing(tmp_path):
    kwargs = dict(num_train=4, num_val=2, progress=False)
    first = make_demo_dataset(tmp_path, **kwargs)
    assert first['generated']
    for dirpath, dirnames, names in os.walk(tmp_path):  # age every file and directory
        for name in names + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(10**18, 10**18))
    before = _mtimes(tmp_path)
    second = make_demo_dataset(tmp_path, **kwargs)
    assert not second['generated']
    assert _mtimes(tmp_path) == before
    assert second['stats'] == first['stats']
    assert {k: second[k] for k in ('train_ann_file', 'val_ann_file', 'root')} == \
        {k: first[k] for k in ('train_ann_file', 'val_ann_file', 'root')}
    assert make_demo_dataset(tmp_path, overwrite=True, **kwargs)['generated']


def test_changed_parameters_regenerate_cleanly(tmp_path):
    first = make_demo_dataset(tmp_path, num_train=6, num_val=2, progress=False)
    original = _tree(tmp_path)
    (tmp_path / 'notes.txt').write_text('not ours')
    changed = make_demo_dataset(tmp_path, num_train=3, num_val=2, clutter=0.2, progress=False)
    assert changed['generated']
    assert sorted(os.listdir(changed['train_img_dir'])) == [f'{i:06d}.png' for i in range(3)]
    assert len(_load(changed['train_ann_file'])['images']) == 3
    manifest = _load(changed['manifest'])
    assert manifest['params']['num_train'] == 3 and manifest['params']['clutter'] == 0.2
    assert (tmp_path / 'notes.txt').read_text() == 'not ours'
    # Going back to the first parameters reproduces the first files exactly.
    back = make_demo_dataset(tmp_path, num_train=6, num_val=2, progress=False)
    assert back['generated'] and back['stats'] == first['stats']
    now = _tree(tmp_path)
    del now['notes.txt']
    assert now == original


def test_interrupted_or_damaged_data_is_redone(tmp_path):
    kwargs = dict(num_train=3, num_val=1, progress=False)
    make_demo_dataset(tmp_path, **kwargs)
    os.remove(tmp_path / 'train' / '000001.png')
    assert make_demo_dataset(tmp_path, **kwargs)['generated']
    assert (tmp_path / 'train' / '000001.png').is_file()
    # A run that died half-way leaves its marker and no manifest: the next call starts over.
    os.remove(tmp_path / 'manifest.json')
    (tmp_path / '.make_demo_dataset.incomplete').write_text('{}')
    assert make_demo_dataset(tmp_path, **kwargs)['generated']
    assert not (tmp_path / '.make_demo_dataset.incomplete').exists()
    assert make_demo_dataset(tmp_path, **kwargs)['generated'] is False


def test_foreign_directories_are_not_deleted_without_overwrite(tmp_path):
    (tmp_path / 'train').mkdir()
    (tmp_path / 'train' / 'precious.jpg').write_bytes(b'x')
    with pytest.raises(FileExistsError, match='overwrite=True'):
        make_demo_dataset(tmp_path, num_train=2, num_val=1, progress=False)
    assert (tmp_path / 'train' / 'precious.jpg').exists()
    make_demo_dataset(tmp_path, num_train=2, num_val=1, progress=False, overwrite=True)
    assert sorted(os.listdir(tmp_path / 'train')) == ['000000.png', '000001.png']


@pytest.mark.parametrize('kwargs, name, bad', [
    (dict(num_train=-1), 'num_train', '-1'),
    (dict(num_train=0), 'num_train', '0'),
    (dict(num_train=2.5), 'num_train', '2.5'),
    (dict(num_val=-3), 'num_val', '-3'),
    (dict(seed=-1), 'seed', '-1'),
    (dict(image_size=(20, 20)), 'image_size', '20'),
    (dict(image_size=(64,)), 'image_size', '(64,)'),
    (dict(min_objects=5, max_objects=2), 'min_objects', '5'),
    (dict(min_objects=0), 'min_objects', '0'),
    (dict(min_size=3), 'min_size', '3'),
    (dict(max_size=500), 'max_size', '500'),
    (dict(min_size=40, max_size=30), 'max_size', '30'),
    (dict(min_size=200), 'image_size', '(256, 256)'),
    (dict(max_aspect=0.5), 'max_aspect', '0.5'),
    (dict(max_occlusion=1.5), 'max_occlusion', '1.5'),
    (dict(clutter=-0.1), 'clutter', '-0.1'),
    (dict(clutter=float('nan')), 'clutter', 'nan'),
    (dict(image_format='gif'), 'image_format', 'gif'),
])
def test_bad_arguments_raise_value_error(tmp_path, kwargs, name, bad):
    with pytest.raises(ValueError) as info:
        make_demo_dataset(tmp_path / 'bad', progress=False, **kwargs)
    message = str(info.value)
    assert name in message and bad in message
    assert not (tmp_path / 'bad').exists()  # nothing is written before validation


def test_small_but_valid_images(tmp_path):
    # 45% of 40 px = 18 px >= min_size 12: accepted, and every box fits the ranges.
    out = make_demo_dataset(tmp_path, num_train=4, num_val=0, image_size=(40, 48), progress=False)
    assert out['params']['max_size'] == 18
    for a in _load(out['train_ann_file'])['annotations']:
        x, y, w, h = a['bbox']
        assert 12 <= w <= 18 and 12 <= h <= 18 and x + w <= 48 and y + h <= 40


# --------------------------------------------------------------------------- command line
def test_cli_main_prints_summary(tmp_path, capsys):
    out = tmp_path / 'cli'
    assert main(['--out', str(out), '--seed', '3', '--num-train', '3', '--num-val', '2',
                 '--size', '96', '128', '--quiet']) == 0
    text = capsys.readouterr().out
    assert 'train: 3 images' in text and 'val: 2 images' in text
    assert 'per class:' in text and 'box sides' in text
    coco = _load(out / 'annotations' / 'instances_train.json')
    assert {(i['height'], i['width']) for i in coco['images']} == {(96, 128)}
    assert _load(out / 'manifest.json')['params']['seed'] == 3
    main(['--out', str(out), '--seed', '3', '--num-train', '3', '--num-val', '2',
          '--size', '96', '128', '--quiet'])
    assert 'already up to date' in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(['--out', str(out), '--num-train', '-2'])
    assert info.value.code == 2
    assert 'num_train' in capsys.readouterr().err


def test_tool_wrapper_runs(tmp_path, monkeypatch, capsys):
    out = tmp_path / 'tool'
    monkeypatch.setattr(sys, 'argv', ['make_demo_data.py', '--out', str(out), '--num-train', '2',
                                      '--num-val', '1', '--size', '64', '64'])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(os.path.join(REPO, 'tools', 'dataset', 'make_demo_data.py'),
                       run_name='__main__')
    assert info.value.code == 0
    captured = capsys.readouterr().out
    assert '[make_demo_dataset] train: 2/2 images (100%)' in captured
    assert (out / 'manifest.json').is_file()


def test_python_dash_m_entry_point(tmp_path):
    out = tmp_path / 'm'
    proc = subprocess.run(
        [sys.executable, '-m', 'mmbackbones.datasets.synthetic', '--out', str(out), '--num-train',
         '2', '--num-val', '1', '--size', '64', '64', '--quiet'],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'train: 2 images' in proc.stdout
    assert 'RuntimeWarning' not in proc.stderr
    assert len(os.listdir(out / 'train')) == 2
