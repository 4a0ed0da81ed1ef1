# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Deterministic synthetic COCO-format detection data ("demo shapes").

The demo configs train a small detector from scratch on a CPU in minutes, so they need a data set
that is small, learnable, redistributable and identical on every machine. This module draws one.

What an image contains
----------------------
* A background: a linear gradient between two random colours, plus (scaled by ``clutter``) a
  smooth low-frequency texture, unannotated distractor strokes (straight lines, zigzag
  polylines, open arcs of at most 200 degrees and clusters of 2-4 px speckles, none of which
  looks like a filled shape of a class) and mild per-pixel Gaussian noise over the whole image.
* ``min_objects``..``max_objects`` filled objects of the six :data:`DEMO_CLASSES`: ellipse,
  rectangle, triangle, cross (plus sign), ring (ellipse with an elliptical hole) and five-point
  star. Colours are random but must differ by at least ~100 RGB units from the background under
  the object and from the objects it touches; colour carries no class information.
* Object boxes have both sides in ``[min_size, max_size]`` pixels (default 12 px up to 45 % of the
  shorter image side) with the scale ``sqrt(w * h)`` log-uniform over that range, and a width/height
  ratio in ``[1 / max_aspect, max_aspect]`` (shapes are stretched, not just resized). Small
  objects are necessarily close to square, because both sides must stay >= ``min_size``.
* Objects are drawn in order and later objects may partially cover earlier ones. A placement is
  rejected (and another position tried) if it would hide more than ``max_occlusion`` of the
  pixels of any earlier object, or would shrink that object's visible box outside the size or
  aspect ranges above. Objects never leave the image. When an object cannot be placed after a
  few tries it is dropped, so with extreme settings an image can hold fewer than
  ``min_objects`` objects (the summary reports the real counts).

What is annotated
-----------------
Edges are crisp (no antialiasing), so every pixel belongs to exactly one object or to the
background. For each object, ``bbox`` is the tight box ``[x, y, w, h]`` around its *visible*
pixels (pixel ``i`` spans ``[i, i + 1)``, so values are whole numbers stored as floats) and
``area`` is the number of visible pixels. ``segmentation`` is one polygon outlining the complete
(amodal) shape, including any part hidden by a later object; for a ring it is the outer outline
(COCO polygons cannot express holes). ``iscrowd`` is always 0. Category ids start at 1 in
:data:`DEMO_CLASSES` order, image ids start at 1 in each split.

Determinism
-----------
Image ``i`` of split ``s`` is drawn from its own ``numpy.random.Generator`` seeded with
``SeedSequence(seed, spawn_key=(split_code, i))``, so train and val are disjoint random streams
of the same distribution, and the first ``k`` images of a set of ``N`` are the first ``k`` of a set
of ``N + m``. Geometry is quantised to integer pixels before rasterisation, images are saved as
PNG (or JPEG at a fixed quality) and the JSON is written with a fixed key order, so the same
parameters give byte-identical files on every run with the same numpy/Pillow versions.

Files and re-runs
-----------------
::

    <out_dir>/annotations/instances_train.json
    <out_dir>/annotations/instances_val.json
    <out_dir>/train/000000.png ...
    <out_dir>/val/000000.png ...
    <out_dir>/manifest.json        # generator version, parameters and summary; written last

A second call with the same parameters finds a matching manifest and returns at once without
touching any file. Different parameters (or a newer generator version) remove the old split
directories and annotation files and draw everything again. Annotation files and the manifest
are written atomically, and a ``.make_demo_dataset.incomplete`` marker exists while a run is in
progress, so an interrupted run never looks complete and is redone by the next call.

Command line::

    python -m mmbackbones.datasets.synthetic --out data/demo --seed 0 \\
        --num-train 600 --num-val 150 --size 256 256 [--overwrite]
"""
import argparse
import colorsys
import json
import math
import os
import shutil
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import PIL
from PIL import Image, ImageDraw

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from ..fileio import atomic_write_bytes

__all__ = [
    'DEMO_CLASSES', 'DEMO_PALETTE', 'GENERATOR_VERSION', 'DemoShapesDataset',
    'make_demo_dataset', 'main'
]

#: Bump whenever a change to the drawing code changes the output for the same parameters;
#: existing data sets are then regenerated on their next use.
GENERATOR_VERSION = 1

#: Class names in category-id order (category id = index + 1).
DEMO_CLASSES = ('ellipse', 'rectangle', 'triangle', 'cross', 'ring', 'star')

#: One RGB colour per class, for visualisation only (object colours in the images are random).
DEMO_PALETTE = [(220, 20, 60), (0, 130, 200), (60, 180, 75), (245, 130, 48), (145, 30, 180),
                (240, 200, 0)]

_SPLIT_CODES = {'train': 0, 'val': 1}
_MANIFEST = 'manifest.json'
_MARKER = '.make_demo_dataset.incomplete'
_GENERATOR_NAME = 'mmbackbones.datasets.synthetic'

# Drawing constants (part of the generator version, not knobs).
_MAX_SHAPE_ROUNDS = 4  # fresh class/size draws per object before it is dropped
_MAX_POSITION_TRIES = 20  # positions tried per class/size draw
_MIN_COLOUR_DISTANCE = 100.0  # RGB distance wanted from background and touching objects
_COLOUR_TRIES = 24
_JPEG_QUALITY = 95


class DemoShapesDataset(CocoDataset):
    """:class:`mmdet.datasets.CocoDataset` with the classes of the synthetic demo data.

    Use it with the files written by :func:`make_demo_dataset`::

        dataset = dict(type='DemoShapesDataset', data_root='data/demo/',
                       ann_file='annotations/instances_train.json',
                       data_prefix=dict(img='train/'), pipeline=...)
    """

    METAINFO = dict(classes=DEMO_CLASSES, palette=DEMO_PALETTE)


# ``python -m mmbackbones.datasets.synthetic`` executes this file a second time as ``__main__``
# after the package import has already registered the class; registering only the importable
# module's class keeps the registry free of duplicates.
if __name__ != '__main__':
    DATASETS.register_module(module=DemoShapesDataset)


# --------------------------------------------------------------------------- parameter checks
def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f'{name} must be an integer in [{low}, {high}], got {value!r}.')
    if not low <= value <= high:
        raise ValueError(f'{name} must be in [{low}, {high}], got {value!r}.')
    return int(value)


def _check_float(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f'{name} must be a number in [{low}, {high}], got {value!r}.')
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f'{name} must be in [{low}, {high}], got {value!r}.')
    return value


def _resolve_params(num_train, num_val, image_size, seed, min_objects, max_objects, min_size,
                    max_size, max_aspect, max_occlusion, clutter, image_format) -> dict:
    """Validate every knob and return the canonical parameter dict stored in the manifest."""
    num_train = _check_int('num_train', num_train, 1, 10_000_000)
    num_val = _check_int('num_val', num_val, 0, 10_000_000)
    seed = _check_int('seed', seed, 0, 2**63 - 1)
    if (isinstance(image_size, (str, bytes))
            or not isinstance(image_size, (Sequence, np.ndarray)) or len(image_size) != 2):
        raise ValueError(f'image_size must be a pair (height, width) of integers in [32, 4096], '
                         f'got {image_size!r}.')
    height = _check_int('image_size[0] (height)', image_size[0], 32, 4096)
    width = _check_int('image_size[1] (width)', image_size[1], 32, 4096)
    min_objects = _check_int('min_objects', min_objects, 1, 100)
    max_objects = _check_int('max_objects', max_objects, 1, 100)
    if min_objects > max_objects:
        raise ValueError(f'min_objects must be <= max_objects, got min_objects={min_objects} '
                         f'and max_objects={max_objects}.')
    min_size = _check_int('min_size', min_size, 4, 4096)
    short = min(height, width)
    if max_size is None:
        max_size = int(round(0.45 * short))
        if max_size < min_size:
            raise ValueError(
                f'image_size={(height, width)!r} is too small: the largest object side '
                f'(45% of the shorter image side = {max_size} px) must be >= min_size='
                f'{min_size}; use an image side of at least {math.ceil(min_size / 0.45)} px '
                f'or a smaller min_size.')
    else:
        max_size = _check_int('max_size', max_size, min_size, short)
    max_aspect = _check_float('max_aspect', max_aspect, 1.0, 8.0)
    max_occlusion = _check_float('max_occlusion', max_occlusion, 0.0, 0.9)
    clutter = _check_float('clutter', clutter, 0.0, 1.0)
    if image_format not in ('png', 'jpg'):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}.")
    return dict(
        num_train=num_train, num_val=num_val, image_size=[height, width], seed=seed,
        min_objects=min_objects, max_objects=max_objects, min_size=min_size, max_size=max_size,
        max_aspect=max_aspect, max_occlusion=max_occlusion, clutter=clutter,
        image_format=image_format)


# --------------------------------------------------------------------------- geometry helpers
def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    if high <= low:
        return low
    return math.exp(math.log(low) + (math.log(high) - math.log(low)) * float(rng.random()))


def _box_ok(w: int, h: int, p: dict) -> bool:
    """Whether a (visible) box of ``w`` x ``h`` pixels satisfies the documented ranges."""
    lo, hi, aspect = p['min_size'], p['max_size'], p['max_aspect']
    return lo <= w <= hi and lo <= h <= hi and w <= aspect * h and h <= aspect * w


def _sample_box(rng: np.random.Generator, p: dict) -> Tuple[int, int]:
    """Box size with sqrt(w*h) log-uniform and w/h log-uniform over the feasible range."""
    lo, hi, aspect = p['min_size'], p['max_size'], p['max_aspect']
    scale = _log_uniform(rng, lo, hi)
    # q = sqrt(w / h); keep both sides within [lo, hi] and the ratio within the aspect range.
    q_lo = max(lo / scale, scale / hi, 1.0 / math.sqrt(aspect))
    q_hi = min(hi / scale, scale / lo, math.sqrt(aspect))
    q = _log_uniform(rng, q_lo, max(q_lo, q_hi))
    w = min(max(int(round(scale * q)), lo), hi)
    h = min(max(int(round(scale / q)), lo), hi)
    return w, h


def _unit_polygon(rng: np.random.Generator, cls: str) -> List[Tuple[float, float]]:
    """Outline of a class shape in the unit box [0, 1]^2 (touching all four sides)."""
    if cls in ('ellipse', 'ring'):
        angles = [2 * math.pi * i / 32 for i in range(32)]
        return [(0.5 + 0.5 * math.cos(a), 0.5 + 0.5 * math.sin(a)) for a in angles]
    if cls == 'rectangle':
        return [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    if cls == 'triangle':
        apex = float(rng.random())
        base = int(rng.integers(4))  # side that holds the base: bottom, top, left, right
        tri = [(0.0, 1.0), (1.0, 1.0), (apex, 0.0)]
        if base == 1:
            tri = [(x, 1.0 - y) for x, y in tri]
        elif base == 2:
            tri = [(1.0 - y, x) for x, y in tri]
        elif base == 3:
            tri = [(y, x) for x, y in tri]
        return tri
    if cls == 'cross':
        half_v = 0.15 + 0.075 * float(rng.random())  # half-width of the vertical bar
        half_h = 0.15 + 0.075 * float(rng.random())  # half-height of the horizontal bar
        cy = 0.5 + (0.35 - half_h) * (2 * float(rng.random()) - 1) * 0.5
        x0, x1, y0, y1 = 0.5 - half_v, 0.5 + half_v, cy - half_h, cy + half_h
        return [(x0, 0.0), (x1, 0.0), (x1, y0), (1.0, y0), (1.0, y1), (x1, y1), (x1, 1.0),
                (x0, 1.0), (x0, y1), (0.0, y1), (0.0, y0), (x0, y0)]
    if cls == 'star':
        inner = 0.4 + 0.1 * float(rng.random())
        rot = 2 * math.pi * float(rng.random())
        pts = []
        for i in range(10):
            r = 1.0 if i % 2 == 0 else inner
            a = rot + math.pi * i / 5
            pts.append((r * math.cos(a), r * math.sin(a)))
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        x_lo, x_hi, y_lo, y_hi = min(xs), max(xs), min(ys), max(ys)
        return [((x - x_lo) / (x_hi - x_lo), (y - y_lo) / (y_hi - y_lo)) for x, y in pts]
    raise AssertionError(cls)


def _shape_mask(rng: np.random.Generator, cls: str, w: int,
                h: int) -> Tuple[np.ndarray, List[Tuple[float, float]]]:
    """Rasterise a shape into a ``h`` x ``w`` boolean mask; also return its unit outline."""
    outline = _unit_polygon(rng, cls)
    canvas = Image.new('L', (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if cls in ('ellipse', 'ring'):
        draw.ellipse([0, 0, w - 1, h - 1], fill=1)
        if cls == 'ring':
            ratio = 0.4 + 0.2 * float(rng.random())
            cx, cy = (w - 1) / 2, (h - 1) / 2
            rx, ry = ratio * (w - 1) / 2, ratio * (h - 1) / 2
            draw.ellipse([round(cx - rx), round(cy - ry), round(cx + rx), round(cy + ry)], fill=0)
    else:
        draw.polygon([(round(x * (w - 1), 3), round(y * (h - 1), 3)) for x, y in outline], fill=1)
    return np.asarray(canvas, dtype=bool), outline


def _tight_box(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) half-open pixel box of the true pixels of ``mask``, or None."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _colour_distance(a: Sequence[float], b: Sequence[float]) -> float:
    return math.sqrt(sum((float(x) - float(y))**2 for x, y in zip(a, b)))


def _pick_colour(rng: np.random.Generator, avoid: List[Tuple[float, float, float]]):
    """A saturated random colour far (in RGB) from every colour in ``avoid``."""
    best, best_dist = None, -1.0
    for _ in range(_COLOUR_TRIES):
        hue, sat, val = float(rng.random()), 0.45 + 0.55 * float(rng.random()), \
            0.35 + 0.65 * float(rng.random())
        rgb = tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, sat, val))
        dist = min(_colour_distance(rgb, c) for c in avoid)
        if dist >= _MIN_COLOUR_DISTANCE:
            return rgb
        if dist > best_dist:
            best, best_dist = rgb, dist
    return best


# --------------------------------------------------------------------------- drawing
def _background(rng: np.random.Generator, height: int, width: int, clutter: float) -> np.ndarray:
    """Gradient + smooth texture, as float64 H x W x 3 (not yet clipped)."""
    c0 = rng.integers(30, 226, size=3).astype(np.float64)
    c1 = rng.integers(30, 226, size=3).astype(np.float64)
    angle = 2 * math.pi * float(rng.random())
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    t = xs * math.cos(angle) + ys * math.sin(angle)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    bg = c0 + (c1 - c0) * t[..., None]
    if clutter > 0:
        grid_size = (max(2, height // 32), max(2, width // 32))
        grid = rng.integers(0, 256, size=grid_size, dtype=np.uint8)
        tex = np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC), np.float64)
        bg += ((tex - 127.5) * (40.0 * clutter / 127.5))[..., None]
    return bg


def _draw_distractors(rng: np.random.Generator, image: Image.Image, clutter: float) -> None:
    """Unannotated strokes and speckles that are clearly none of the classes."""
    width, height = image.size
    count = int(rng.integers(round(4 * clutter), round(12 * clutter) + 1))
    draw = ImageDraw.Draw(image)
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        kind = int(rng.integers(4))
        if kind == 0:  # straight line
            pts = [(int(rng.integers(width)), int(rng.integers(height))) for _ in range(2)]
            draw.line(pts, fill=colour, width=int(rng.integers(1, 4)))
        elif kind == 1:  # zigzag polyline
            x, y = int(rng.integers(width)), int(rng.integers(height))
            pts = [(x, y)]
            for _ in range(int(rng.integers(2, 6))):
                x += int(rng.integers(-40, 41))
                y += int(rng.integers(-40, 41))
                pts.append((x, y))
            draw.line(pts, fill=colour, width=int(rng.integers(1, 3)))
        elif kind == 2:  # open arc
            size = int(rng.integers(20, 81))
            x, y = int(rng.integers(-size // 2, width)), int(rng.integers(-size // 2, height))
            start = int(rng.integers(360))
            draw.arc([x, y, x + size, y + size], start, start + int(rng.integers(60, 201)),
                     fill=colour, width=int(rng.integers(1, 3)))
        else:  # speckle cluster: dots of 2-4 px, far below the smallest object
            cx, cy = int(rng.integers(width)), int(rng.integers(height))
            for _ in range(int(rng.integers(6, 21))):
                x, y = cx + int(rng.integers(-25, 26)), cy + int(rng.integers(-25, 26))
                r = int(rng.integers(1, 3))
                draw.ellipse([x - r, y - r, x + r - 1, y + r - 1], fill=colour)


def _occlusion_updates(p: dict, labels: np.ndarray, objects: List[dict], window: tuple,
                       mask: np.ndarray, index: int) -> Optional[Dict[int, tuple]]:
    """Check what painting ``mask`` at ``window`` does to the earlier objects.

    Returns None if some earlier object would lose more than ``max_occlusion`` of its pixels or
    its visible box would leave the size/aspect ranges; otherwise ``{j: (visible_pixels,
    visible_box)}`` for every earlier object ``j`` (0-based) that loses pixels.
    """
    covered = np.bincount(labels[window][mask], minlength=index)[1:]
    hit = np.flatnonzero(covered).tolist()
    if not hit:
        return {}
    candidate = labels.copy()
    candidate[window][mask] = index
    updates = {}
    for j in hit:
        other = objects[j]
        visible = other['visible'] - int(covered[j])
        if visible < (1.0 - p['max_occlusion']) * other['full_area']:
            return None
        bx0, by0, bx1, by1 = other['box']
        sx0, sy0, sx1, sy1 = _tight_box(candidate[by0:by1, bx0:bx1] == j + 1)
        if not _box_ok(sx1 - sx0, sy1 - sy0, p):
            return None
        updates[j] = (visible, (bx0 + sx0, by0 + sy0, bx0 + sx1, by0 + sy1))
    return updates


def _place_object(rng: np.random.Generator, p: dict, labels: np.ndarray, objects: List[dict],
                  background: np.ndarray) -> Optional[dict]:
    """Try to add one object; update ``labels`` and earlier objects' visibility in place."""
    height, width = labels.shape
    index = len(objects) + 1
    for _ in range(_MAX_SHAPE_ROUNDS):
        cls_idx = int(rng.integers(len(DEMO_CLASSES)))
        w, h = _sample_box(rng, p)
        mask, outline = _shape_mask(rng, DEMO_CLASSES[cls_idx], w, h)
        box = _tight_box(mask)
        if box is None or box != (0, 0, w, h) or not _box_ok(w, h, p):
            continue
        full_area = int(mask.sum())
        for _ in range(_MAX_POSITION_TRIES):
            x0 = int(rng.integers(0, width - w + 1))
            y0 = int(rng.integers(0, height - h + 1))
            window = (slice(y0, y0 + h), slice(x0, x0 + w))
            updates = _occlusion_updates(p, labels, objects, window, mask, index)
            if updates is None:
                continue
            labels[window][mask] = index
            for j, (visible, vbox) in updates.items():
                objects[j]['visible'], objects[j]['box'] = visible, vbox
            # Colour: far from the background under the object and from objects it touches.
            pixels = background[y0:y0 + h, x0:x0 + w][mask]
            sums = pixels.sum(axis=0, dtype=np.int64).tolist()  # integer sums: exact everywhere
            avoid = [tuple(v / pixels.shape[0] for v in sums)]
            for other in objects:
                bx0, by0, bx1, by1 = other['box']
                if bx0 <= x0 + w + 1 and x0 - 1 <= bx1 and by0 <= y0 + h + 1 and y0 - 1 <= by1:
                    avoid.append(other['colour'])
            return dict(
                category=cls_idx, box=(x0, y0, x0 + w, y0 + h), full_area=full_area,
                visible=full_area, colour=_pick_colour(rng, avoid),
                outline=[(x0 + x * w, y0 + y * h) for x, y in outline])
    return None


def _draw_image(rng: np.random.Generator, p: dict) -> Tuple[np.ndarray, List[dict]]:
    """Draw one image; returns (H x W x 3 uint8 array, annotated objects in drawing order)."""
    height, width = p['image_size']
    clutter = p['clutter']
    bg = np.clip(np.rint(_background(rng, height, width, clutter)), 0, 255).astype(np.uint8)
    canvas = Image.fromarray(bg)
    _draw_distractors(rng, canvas, clutter)
    image = np.array(canvas)
    labels = np.zeros((height, width), dtype=np.int64)
    objects: List[dict] = []
    for _ in range(int(rng.integers(p['min_objects'], p['max_objects'] + 1))):
        obj = _place_object(rng, p, labels, objects, image)
        if obj is not None:
            objects.append(obj)
    for k, obj in enumerate(objects, start=1):
        image[labels == k] = obj['colour']
    if clutter > 0:
        noise = rng.normal(0.0, 8.0 * clutter, size=image.shape)
        image = np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)
    return image, objects


# --------------------------------------------------------------------------- files
def _atomic_write_json(path: str, obj) -> None:
    atomic_write_bytes((json.dumps(obj, separators=(',', ':')) + '\n').encode('utf-8'), path)


def _paths(root: str) -> Dict[str, str]:
    return dict(
        root=root,
        train_ann_file=os.path.join(root, 'annotations', 'instances_train.json'),
        val_ann_file=os.path.join(root, 'annotations', 'instances_val.json'),
        train_img_dir=os.path.join(root, 'train'),
        val_img_dir=os.path.join(root, 'val'),
        manifest=os.path.join(root, _MANIFEST))


def _read_manifest(path: str) -> Optional[dict]:
    try:
        with open(path, encoding='utf-8') as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _is_complete(paths: Dict[str, str], manifest: dict) -> bool:
    """Whether every file a manifest promises is present (cheap existence checks only)."""
    if os.path.exists(os.path.join(paths['root'], _MARKER)):
        return False
    counts = manifest['params']
    for split in _SPLIT_CODES:
        img_dir = paths[f'{split}_img_dir']
        if not os.path.isfile(paths[f'{split}_ann_file']) or not os.path.isdir(img_dir):
            return False
        if len(os.listdir(img_dir)) != counts[f'num_{split}']:
            return False
    return True


def _remove_outputs(paths: Dict[str, str]) -> None:
    """Remove what this generator writes (and nothing else) from the output directory."""
    for key in ('manifest', 'train_ann_file', 'val_ann_file'):
        if os.path.lexists(paths[key]):
            os.remove(paths[key])
    for key in ('train_img_dir', 'val_img_dir'):
        if os.path.isdir(paths[key]) and not os.path.islink(paths[key]):
            shutil.rmtree(paths[key])
        elif os.path.lexists(paths[key]):
            os.remove(paths[key])
    ann_dir = os.path.dirname(paths['train_ann_file'])
    if os.path.isdir(ann_dir) and not os.listdir(ann_dir):
        os.rmdir(ann_dir)


def _split_stats(coco: dict) -> dict:
    anns = coco['annotations']
    per_image: Dict[int, List[List[float]]] = {img['id']: [] for img in coco['images']}
    for ann in anns:
        per_image[ann['image_id']].append(ann['bbox'])
    counts = [len(v) for v in per_image.values()]
    overlapping = 0
    for boxes in per_image.values():
        for a in range(len(boxes)):
            ax, ay, aw, ah = boxes[a]
            for b in range(a + 1, len(boxes)):
                bx, by, bw, bh = boxes[b]
                if min(ax + aw, bx + bw) > max(ax, bx) and min(ay + ah, by + bh) > max(ay, by):
                    overlapping += 1
    names = {c['id']: c['name'] for c in coco['categories']}
    per_class = {name: 0 for name in names.values()}
    for ann in anns:
        per_class[names[ann['category_id']]] += 1
    sides = [s for ann in anns for s in ann['bbox'][2:]]
    ratios = [ann['bbox'][2] / ann['bbox'][3] for ann in anns]
    return dict(
        images=len(coco['images']),
        objects=len(anns),
        objects_per_class=per_class,
        objects_per_image=dict(
            min=min(counts, default=0), max=max(counts, default=0),
            mean=round(len(anns) / len(counts), 3) if counts else 0.0),
        box_side=dict(min=min(sides, default=0.0), max=max(sides, default=0.0)),
        aspect_ratio=dict(
            min=round(min(ratios, default=0.0), 4), max=round(max(ratios, default=0.0), 4)),
        occluded_objects=sum(1 for ann in anns if ann['_occluded']),
        overlapping_box_pairs=overlapping)


def _generate_split(split: str, p: dict, img_dir: str, progress: bool) -> Tuple[dict, dict]:
    """Draw and save one split's images; return its COCO dict and its summary."""
    os.makedirs(img_dir, exist_ok=True)
    num = p[f'num_{split}']
    height, width = p['image_size']
    ext = p['image_format']
    coco = dict(
        info=dict(description='mmbackbones synthetic demo shapes', version=str(GENERATOR_VERSION),
                  split=split, seed=p['seed']),
        licenses=[],
        images=[],
        annotations=[],
        categories=[dict(id=i + 1, name=name, supercategory='shape')
                    for i, name in enumerate(DEMO_CLASSES)])
    step = max(1, math.ceil(num / 10))
    ann_id = 1
    for i in range(num):
        rng = np.random.default_rng(
            np.random.SeedSequence(p['seed'], spawn_key=(_SPLIT_CODES[split], i)))
        image, objects = _draw_image(rng, p)
        file_name = f'{i:06d}.{ext}'
        path = os.path.join(img_dir, file_name)
        if ext == 'png':
            Image.fromarray(image).save(path, format='PNG', compress_level=6)
        else:
            Image.fromarray(image).save(path, format='JPEG', quality=_JPEG_QUALITY, subsampling=0)
        coco['images'].append(dict(id=i + 1, file_name=file_name, width=width, height=height))
        for obj in objects:
            x0, y0, x1, y1 = obj['box']
            coco['annotations'].append(dict(
                id=ann_id, image_id=i + 1, category_id=obj['category'] + 1,
                bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                area=float(obj['visible']), iscrowd=0,
                segmentation=[[round(float(v), 2) for xy in obj['outline'] for v in xy]],
                _occluded=obj['visible'] < obj['full_area']))
            ann_id += 1
        if progress and ((i + 1) % step == 0 or i + 1 == num):
            print(f'[make_demo_dataset] {split}: {i + 1}/{num} images '
                  f'({100 * (i + 1) // num}%)', flush=True)
    stats = _split_stats(coco)
    for ann in coco['annotations']:
        del ann['_occluded']
    return coco, stats


# --------------------------------------------------------------------------- public API
def use_demo_data_root(cfg, data_root: str) -> None:
    """Point a demo config's train/val/test loaders and COCO evaluators at ``data_root`` (a
    folder written by :func:`make_demo_dataset`), in place."""
    root = data_root.rstrip('/') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = root + 'annotations/instances_val.json'


def make_demo_dataset(out_dir: str,
                      *,
                      num_train: int = 600,
                      num_val: int = 150,
                      image_size: Tuple[int, int] = (256, 256),
                      seed: int = 0,
                      min_objects: int = 2,
                      max_objects: int = 6,
                      min_size: int = 12,
                      max_size: Optional[int] = None,
                      max_aspect: float = 2.5,
                      max_occlusion: float = 0.3,
                      clutter: float = 0.5,
                      image_format: str = 'png',
                      overwrite: bool = False,
                      progress: bool = True) -> dict:
    """Write (or reuse) the deterministic synthetic COCO detection data set in ``out_dir``.

    See the module docstring for what the images contain and how they are annotated.

    Args:
        out_dir (str): Output directory; created if missing. Only ``train/``, ``val/``,
            ``annotations/instances_{train,val}.json`` and ``manifest.json`` in it are touched.
        num_train (int): Number of training images, >= 1. Defaults to 600.
        num_val (int): Number of validation images, >= 0. Defaults to 150.
        image_size (tuple[int, int]): ``(height, width)`` in pixels, each in [32, 4096].
            Defaults to (256, 256).
        seed (int): Non-negative base seed. Defaults to 0.
        min_objects (int): Fewest objects attempted per image, >= 1. Defaults to 2.
        max_objects (int): Most objects attempted per image, >= ``min_objects``. Defaults to 6.
        min_size (int): Smallest box side in pixels, >= 4. Defaults to 12.
        max_size (int, optional): Largest box side in pixels, in ``[min_size, shorter image
            side]``. Defaults to 45% of the shorter image side (115 px at 256 x 256).
        max_aspect (float): Box width/height ratios lie in ``[1 / max_aspect, max_aspect]``;
            in [1, 8]. Defaults to 2.5.
        max_occlusion (float): Largest fraction of an object's pixels that later objects may
            cover, in [0, 0.9]. Defaults to 0.3.
        clutter (float): Background clutter in [0, 1]: scales the texture amplitude, the number
            of distractor strokes (2-6 at 0.5, 4-12 at 1.0) and the pixel noise (sigma
            8 * clutter).
            0 gives a clean gradient background. Defaults to 0.5.
        image_format (str): ``'png'`` (lossless, default) or ``'jpg'`` (quality 95).
        overwrite (bool): Regenerate even if a matching data set exists, and replace
            ``train/``/``val/``/annotation files not written by this function. Defaults to False.
        progress (bool): Print a progress line every ~10% of each split. Defaults to True.

    Returns:
        dict: ``root``, ``train_ann_file``, ``val_ann_file``, ``train_img_dir``,
        ``val_img_dir`` and ``manifest`` (absolute paths); ``classes`` (:data:`DEMO_CLASSES`);
        ``params`` (the resolved parameters); ``stats`` (per split: ``images``, ``objects``,
        ``objects_per_class``, ``objects_per_image`` min/mean/max, ``box_side`` min/max,
        ``aspect_ratio`` min/max, ``occluded_objects``, ``overlapping_box_pairs``);
        ``generated`` (False when an existing matching data set was reused) and ``seconds``.

    Raises:
        ValueError: If a parameter is out of range (the message names it and the valid range).
        FileExistsError: If ``out_dir`` holds ``train/``, ``val/`` or annotation files that this
            function did not write and ``overwrite`` is False.
    """
    start = time.perf_counter()
    params = _resolve_params(num_train, num_val, image_size, seed, min_objects, max_objects,
                             min_size, max_size, max_aspect, max_occlusion, clutter, image_format)
    root = os.path.abspath(os.fspath(out_dir))
    paths = _paths(root)
    wanted = dict(generator=_GENERATOR_NAME, version=GENERATOR_VERSION, params=params)

    manifest = _read_manifest(paths['manifest'])
    if (not overwrite and manifest is not None
            and {k: manifest.get(k) for k in wanted} == wanted and _is_complete(paths, manifest)):
        return dict(paths, classes=DEMO_CLASSES, params=params, stats=manifest['stats'],
                    generated=False, seconds=time.perf_counter() - start)

    ours = (manifest is not None and manifest.get('generator') == _GENERATOR_NAME) or \
        os.path.exists(os.path.join(root, _MARKER))
    foreign = [paths[k] for k in ('train_img_dir', 'val_img_dir', 'train_ann_file', 'val_ann_file')
               if os.path.lexists(paths[k])]
    if foreign and not ours and not overwrite:
        raise FileExistsError(
            f'{root} already contains {", ".join(os.path.relpath(f, root) for f in foreign)} '
            f'not written by make_demo_dataset (no {_MANIFEST}); pass overwrite=True to replace '
            f'them or choose another out_dir.')

    os.makedirs(root, exist_ok=True)
    marker = os.path.join(root, _MARKER)
    with open(marker, 'w', encoding='utf-8') as f:
        json.dump(wanted, f)
    _remove_outputs(paths)
    os.makedirs(os.path.dirname(paths['train_ann_file']), exist_ok=True)

    stats = {}
    for split in _SPLIT_CODES:
        coco, stats[split] = _generate_split(split, params, paths[f'{split}_img_dir'], progress)
        _atomic_write_json(paths[f'{split}_ann_file'], coco)

    _atomic_write_json(paths['manifest'], dict(
        wanted, classes=list(DEMO_CLASSES),
        files=dict(train_ann_file='annotations/instances_train.json',
                   val_ann_file='annotations/instances_val.json',
                   train_img_dir='train/', val_img_dir='val/'),
        stats=stats,
        environment=dict(numpy=np.__version__, pillow=PIL.__version__)))
    os.remove(marker)
    return dict(paths, classes=DEMO_CLASSES, params=params, stats=stats, generated=True,
                seconds=time.perf_counter() - start)


def _format_summary(result: dict) -> str:
    p = result['params']
    lines = [
        f"demo shapes data set in {result['root']} "
        f"({'generated' if result['generated'] else 'already up to date'}, "
        f"{result['seconds']:.1f} s)",
        f"  image size {p['image_size'][0]}x{p['image_size'][1]}, seed {p['seed']}, "
        f"classes: {', '.join(DEMO_CLASSES)}",
    ]
    for split, s in result['stats'].items():
        per_class = ', '.join(f'{k} {v}' for k, v in s['objects_per_class'].items())
        opi = s['objects_per_image']
        lines += [
            f"  {split}: {s['images']} images, {s['objects']} objects "
            f"({opi['min']}-{opi['max']} per image, mean {opi['mean']})",
            f'    per class: {per_class}',
            f"    box sides {s['box_side']['min']:g}-{s['box_side']['max']:g} px, "
            f"w/h {s['aspect_ratio']['min']:.2f}-{s['aspect_ratio']['max']:.2f}, "
            f"{s['occluded_objects']} partly occluded, "
            f"{s['overlapping_box_pairs']} overlapping box pairs",
        ]
    lines.append(f"  ann files: {result['train_ann_file']}, {result['val_ann_file']}")
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog='python -m mmbackbones.datasets.synthetic',
        description='Write the deterministic synthetic COCO-format demo detection data set.')
    parser.add_argument('--out', default='data/demo', help='output directory (default: data/demo)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=600)
    parser.add_argument('--num-val', type=int, default=150)
    parser.add_argument('--size', type=int, nargs=2, default=(256, 256), metavar=('H', 'W'),
                        help='image height and width (default: 256 256)')
    parser.add_argument('--min-objects', type=int, default=2)
    parser.add_argument('--max-objects', type=int, default=6)
    parser.add_argument('--min-size', type=int, default=12, help='smallest box side in px')
    parser.add_argument('--max-size', type=int, default=None,
                        help='largest box side in px (default: 45%% of the shorter image side)')
    parser.add_argument('--max-aspect', type=float, default=2.5)
    parser.add_argument('--max-occlusion', type=float, default=0.3)
    parser.add_argument('--clutter', type=float, default=0.5, help='0 (clean) .. 1 (busy)')
    parser.add_argument('--format', choices=('png', 'jpg'), default='png')
    parser.add_argument('--overwrite', action='store_true', help='always regenerate')
    parser.add_argument('--quiet', action='store_true', help='no progress lines')
    args = parser.parse_args(argv)
    try:
        result = make_demo_dataset(
            args.out, num_train=args.num_train, num_val=args.num_val, image_size=tuple(args.size),
            seed=args.seed, min_objects=args.min_objects, max_objects=args.max_objects,
            min_size=args.min_size, max_size=args.max_size, max_aspect=args.max_aspect,
            max_occlusion=args.max_occlusion, clutter=args.clutter, image_format=args.format,
            overwrite=args.overwrite, progress=not args.quiet)
    except (ValueError, FileExistsError) as e:
        parser.error(str(e))
    print(_format_summary(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
