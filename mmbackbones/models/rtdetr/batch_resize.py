# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""RT-DETR's multi-scale training: one random square size per batch, as a batch augment."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.dist import sync_random_seed
from mmengine.logging import MessageHub

#: The official list (rtdetr_pytorch ``RTDETR.multi_scale``, rtdetr_paddle ``BatchRandomResize
#: target_size``): 480..800 in steps of 32, with 640 three times.
RTDETR_SIZES = (480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800)

INTERPOLATIONS = ('nearest', 'bilinear', 'bicubic', 'area')


@MODELS.register_module()
class RTDETRBatchRandomResize(nn.Module):
    """Resize a whole training batch to ``size x size``, one ``size`` drawn per batch.

    RT-DETR trains on 640x640 images and, per batch, resizes them all to a side drawn uniformly
    from ``sizes`` (so 640, listed three times, is drawn 3/13 of the time). Use it in the data
    preprocessor: ``batch_augments=[dict(type='RTDETRBatchRandomResize')]``.

    What it does to the batch: the padded input tensor (N, C, H, W) becomes (N, C, size, size);
    every sample's ground-truth (and ignored) boxes are scaled by ``size / W`` and ``size / H``,
    and its ``img_shape``, ``pad_shape``, ``batch_input_shape`` and ``scale_factor`` follow, so
    that boxes normalised by ``img_shape`` (as the RT-DETR head does) are unchanged. In eval
    mode (and outside training, where mmdet's preprocessor does not call batch augments) the
    batch is returned untouched.

    The size is drawn from a generator of its own, seeded once: with ``seed`` or, when it is
    None, with :func:`mmengine.dist.sync_random_seed` (rank 0's random seed, broadcast once at
    the first call; no communication afterwards). Every rank calls the augment once per
    training iteration, so all ranks draw the same size sequence and a distributed batch has one
    size, as in a single-process run. The official code lets each rank draw its own size
    (``np.random.choice`` in rtdetr_pytorch, a per-worker draw in rtdetr_paddle); that is also
    sound for DDP (gradients are averaged over any mix of sizes), but a shared size keeps the
    ranks' step times equal, so none waits for a slower one at the all-reduce. The draw needs no
    runner and no iteration counter: it works in a bare ``model(...)`` call and in tests. A
    resumed run restarts the size sequence (the sizes stay i.i.d. draws from the list).

    Args:
        sizes (Sequence[int]): The sides to draw from (repeat one to weight it). Default: the
            official RT-DETR list :data:`RTDETR_SIZES`.
        interpolation (str): ``torch.nn.functional.interpolate`` mode, one of
            ``INTERPOLATIONS``. Default: 'nearest', what rtdetr_pytorch uses (``F.interpolate``
            with its default mode); rtdetr_paddle draws one of five OpenCV modes per batch.
        stop_epoch (int, optional): From this (0-based) epoch on, resizing stops and the images
            keep their pipeline size. It reads the epoch that mmengine's ``RuntimeInfoHook``
            stores in the ``MessageHub`` (no epoch there: multi-scale stays on). Default:
            None, as RT-DETR, which resizes in all 72 epochs; RT-DETRv2 stops at epoch 71.
        seed (int, optional): Seed of the size generator. Default: None (see above).

    Example:
        >>> import torch
        >>> from mmdet.structures import DetDataSample
        >>> from mmengine.structures import InstanceData
        >>> aug = RTDETRBatchRandomResize(sizes=[96], seed=0).train()
        >>> sample = DetDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64),
        ...                                      batch_input_shape=(64, 64),
        ...                                      scale_factor=(1.0, 1.0)))
        >>> sample.gt_instances = InstanceData(bboxes=torch.tensor([[8., 16., 32., 48.]]))
        >>> inputs, samples = aug(torch.rand(1, 3, 64, 64), [sample])
        >>> tuple(inputs.shape), samples[0].img_shape, samples[0].gt_instances.bboxes
        ((1, 3, 96, 96), (96, 96), tensor([[12., 24., 48., 72.]]))
    """

    def __init__(self, sizes: Sequence[int] = RTDETR_SIZES, interpolation: str = 'nearest',
                 stop_epoch: Optional[int] = None, seed: Optional[int] = None) -> None:
        super().__init__()
        if (isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                           for s in sizes)):
            raise ValueError(f'RTDETRBatchRandomResize: sizes={sizes!r} is not valid; pass a '
                             f'non-empty list of positive ints, e.g. {list(RTDETR_SIZES)}.')
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f'RTDETRBatchRandomResize: interpolation={interpolation!r} is '
                             f'unknown; choose one of {", ".join(INTERPOLATIONS)}.')
        if stop_epoch is not None and (not isinstance(stop_epoch, int)
                                       or isinstance(stop_epoch, bool) or stop_epoch < 0):
            raise ValueError(f'RTDETRBatchRandomResize: stop_epoch={stop_epoch!r} is not valid; '
                             f'pass None (multi-scale in every epoch) or an int >= 0.')
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f'RTDETRBatchRandomResize: seed={seed!r} is not valid; pass None '
                             f'(a seed shared by all ranks) or an int.')
        self.sizes = tuple(sizes)
        self.interpolation = interpolation
        self.stop_epoch = stop_epoch
        self.seed = seed
        self._generator: Optional[torch.Generator] = None

    def draw_size(self) -> int:
        """The next side from ``sizes`` (uniform over the list's entries)."""
        if self._generator is None:
            self._generator = torch.Generator()
            self._generator.manual_seed(self.seed if self.seed is not None
                                        else sync_random_seed())
        index = torch.randint(len(self.sizes), (1, ), generator=self._generator)
        return self.sizes[int(index)]

    def _stopped(self) -> bool:
        if self.stop_epoch is None:
            return False
        hub = MessageHub.get_current_instance()
        epoch = hub.get_info('epoch')
        return epoch is not None and epoch >= self.stop_epoch

    def forward(self, inputs: torch.Tensor, data_samples: List
                ) -> Tuple[torch.Tensor, List]:
        """Resize ``inputs`` (N, C, H, W) and update ``data_samples`` in place."""
        if not self.training or self._stopped():
            return inputs, data_samples
        size = self.draw_size()
        h, w = inputs.shape[-2:]
        if (h, w) == (size, size):
            return inputs, data_samples
        scale_y, scale_x = size / h, size / w
        kwargs = {} if self.interpolation in ('nearest', 'area') else dict(align_corners=False)
        inputs = F.interpolate(inputs, size=(size, size), mode=self.interpolation, **kwargs)
        for sample in data_samples:
            img_h, img_w = sample.img_shape[:2]
            meta = dict(img_shape=(round(img_h * scale_y), round(img_w * scale_x)),
                        pad_shape=(size, size), batch_input_shape=(size, size))
            if 'scale_factor' in sample:
                factor_x, factor_y = sample.scale_factor[:2]
                meta['scale_factor'] = (factor_x * scale_x, factor_y * scale_y)
            sample.set_metainfo(meta)
            for field in ('gt_instances', 'ignored_instances'):
                if field in sample and 'bboxes' in sample.get(field):
                    instances = sample.get(field)
                    instances.bboxes = _scale_boxes(instances.bboxes, scale_x, scale_y)
        return inputs, data_samples

    def extra_repr(self) -> str:
        return (f'sizes={list(self.sizes)}, interpolation={self.interpolation!r}, '
                f'stop_epoch={self.stop_epoch}, seed={self.seed}')


def _scale_boxes(boxes, scale_x: float, scale_y: float):
    """x1y1x2y2 boxes (a tensor or an mmdet box type) scaled by (scale_x, scale_y)."""
    if hasattr(boxes, 'rescale_'):  # mmdet's HorizontalBoxes
        boxes.rescale_((scale_x, scale_y))
        return boxes
    factor = boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])
    return boxes * factor
