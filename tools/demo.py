"""The embedded demo: synthetic COCO data -> train a detector on CPU -> COCO mAP -> a picture.

    python tools/demo.py [--config CONFIG] [--work-dir DIR] [--max-iters N] [--num-train N] [--amp]

1. generates (or reuses) the deterministic demo dataset in ``data/demo``;
2. trains the quickstart detector (an mmbackbones backbone + mmdet's FPN and head) on CPU;
3. evaluates it with mmdet's COCO metric and prints the bbox mAP;
4. saves ``<work-dir>/predictions.png``: predictions on validation images (ground truth in
   thin white, predictions coloured by class with their scores).

``--amp`` trains, validates and draws under bf16 autocast (float32 weights), as
``tools/train.py --amp`` does on a CPU; it is refused with a clear error on a CPU without bf16
kernels.
"""
import argparse
import os
import os.path as osp
import sys
import time
from typing import List

from mmengine.config import Config, DictAction
from mmengine.runner import Runner
from PIL import Image, ImageDraw

import mmbackbones  # noqa: F401  (registers backbones, datasets, safe checkpoint loading)
from mmbackbones.datasets import (DEMO_CLASSES, DEMO_PALETTE, make_demo_dataset,
                                  use_demo_data_root)
from mmbackbones.engine.launch import UsageError

DEFAULT_CONFIG = 'configs/quickstart/atss_vovnet-19-slim-ese_fpn_demo.py'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='mmbackbones embedded demo (CPU).')
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/demo')
    parser.add_argument('--num-train', type=int, default=800)
    parser.add_argument('--num-val', type=int, default=150)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--max-iters', type=int, help='override the config (quick runs)')
    parser.add_argument('--num-vis', type=int, default=8, help='validation images to draw')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--amp', action='store_true',
                        help='bf16 autocast on the CPU (fp16 AMP on a GPU), as tools/train.py')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def build_config(args) -> Config:
    cfg = Config.fromfile(args.config)
    use_demo_data_root(cfg, args.data_root)
    if args.max_iters:
        cfg.train_cfg.max_iters = args.max_iters
        for sched in cfg.param_scheduler:
            sched.end = min(sched.end, args.max_iters)
            sched.begin = min(sched.begin, max(args.max_iters - 1, 0))
    cfg.work_dir = args.work_dir
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.amp:
        from mmbackbones.engine.launch import enable_amp
        enable_amp(cfg)  # UsageError on a CPU without bf16 kernels
    return cfg


def draw_predictions(model, cfg: Config, data_root: str, out_path: str, num: int,
                     score_thr: float, scale: int = 2, amp: bool = False) -> str:
    from mmdet.apis import inference_detector
    from mmengine.fileio import load

    from mmbackbones.engine.amp import cpu_autocast

    coco = load(osp.join(data_root, 'annotations', 'instances_val.json'))
    images = coco['images'][:num]
    gts = {}
    for ann in coco['annotations']:
        gts.setdefault(ann['image_id'], []).append(ann['bbox'])
    model.cfg = cfg
    model.eval()
    tiles: List[Image.Image] = []
    for info in images:
        path = osp.join(data_root, 'val', info['file_name'])
        with cpu_autocast(model, enabled=amp and not next(model.parameters()).is_cuda):
            result = inference_detector(model, path)
        img = Image.open(path).convert('RGB')
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        draw = ImageDraw.Draw(img)
        for x, y, w, h in gts.get(info['id'], []):
            draw.rectangle([scale * x, scale * y, scale * (x + w), scale * (y + h)],
                           outline=(255, 255, 255), width=1)
        pred = result.pred_instances
        for box, label, score in zip(pred.bboxes.tolist(), pred.labels.tolist(),
                                     pred.scores.tolist()):
            if score < score_thr:
                continue
            colour = tuple(DEMO_PALETTE[label])
            box = [scale * v for v in box]
            draw.rectangle(box, outline=colour, width=2)
            draw.text((box[0] + 3, box[1] + 2), f'{DEMO_CLASSES[label]} {score:.2f}', fill=colour)
        tiles.append(img)
    cols = min(4, len(tiles))
    rows = -(-len(tiles) // cols)
    w, h = tiles[0].size
    grid = Image.new('RGB', (cols * w, rows * h), (0, 0, 0))
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % cols) * w, (i // cols) * h))
    grid.save(out_path)
    return out_path


def main(argv=None) -> dict:
    args = parse_args(argv)
    print(f'[demo] dataset: {args.data_root} ({args.num_train} train / {args.num_val} val, '
          f'seed {args.seed})', flush=True)
    try:
        cfg = build_config(args)
    except UsageError as exc:
        print(f'demo.py: error: {exc}', file=sys.stderr)
        sys.exit(2)
    make_demo_dataset(args.data_root, num_train=args.num_train, num_val=args.num_val,
                      image_size=tuple(cfg.image_size), seed=args.seed)
    os.makedirs(args.work_dir, exist_ok=True)
    runner = Runner.from_cfg(cfg)
    start = time.time()
    runner.train()
    train_min = (time.time() - start) / 60
    # The train loop always validates after its last iteration; RuntimeInfoHook keeps the result.
    hub = runner.message_hub
    metrics = {key: hub.get_scalar(f'val/{key}').current()
               for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75')}
    picture = draw_predictions(runner.model, cfg, args.data_root,
                               osp.join(args.work_dir, 'predictions.png'), args.num_vis,
                               args.score_thr, amp=args.amp)
    bbox_map = metrics.get('coco/bbox_mAP')
    precision = ' under bf16 autocast' if args.amp else ''
    print(f'[demo] trained {cfg.train_cfg.max_iters} iterations{precision} in {train_min:.1f} min '
          f'(log: {runner.log_dir})')
    print(f'[demo] val bbox mAP (COCO 0.5:0.95) = {bbox_map:.3f}, '
          f'mAP@0.5 = {metrics.get("coco/bbox_mAP_50"):.3f}')
    print(f'[demo] predictions drawn in {picture}')
    return dict(metrics=metrics, train_minutes=train_min, picture=picture)


if __name__ == '__main__':
    main()
