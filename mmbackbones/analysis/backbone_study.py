# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Equal-time backbone study: which backbone gives the best detector for a training-time budget?

The detector is fixed: ATSS + mmdet FPN + head on the synthetic demo data, batch 8 at 192 px,
AdamW 2e-3, warm-up + cosine, as configured in the study's base config
``configs/quickstart/atss_vovnet-19-slim-dw-ese_fpn_demo.py``. Only the backbone changes
(:data:`CANDIDATES`), every one trained from scratch with that one optimiser and augmentation
setting. The quickstart (``atss_vovnet-19-slim-ese_fpn_demo.py``) is this detector with the
study's best backbone at equal time; the base stays the -slim-dw file, so the records stay valid.

**Fairness.** Every run gets the same wall-clock budget ``B`` seconds, but not by watching a
clock (a busy machine would then decide the ranking). Phase 1 times one training step of each
detector *paired* with the mmdet ResNet-18 detector (:func:`~mmbackbones.analysis.time_pair`:
one process, alternating, the same batch and threads), giving ``r = t_candidate / t_R18``.
The R18 detector's own step time ``t_ref`` is measured once (paired with a second R18), so
R18 gets ``N_R18 = round(B / t_ref)`` iterations and a candidate ``round(N_R18 / r)`` (at least
2). The schedule (warm-up, then cosine) is stretched to each run's iteration count.

**Runs.** Each run trains through mmengine's ``Runner`` with a seed and is evaluated (COCO bbox
mAP / mAP50 / mAP75 on the val split) at its last iteration. Each finished run writes one JSON
record, atomically, into the results directory. A record is reused only when its candidate,
seed, budget, config hash and iteration count all match the current study, so an interrupted
study picks up where it stopped, and a changed budget or config runs anew (the old records stay
on disk, are ignored and counted as stale in the output). Phase-1 timings are kept in
``<results>/timing/`` the same way, keyed by everything that affects them, so a resumed study
plans the same iteration counts.

:func:`write_report` turns the records into a markdown page and a Pareto plot; for the same
records it writes the same bytes.
"""
import copy
import dataclasses
import difflib
import functools
import gc
import hashlib
import json
import logging
import math
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from mmbackbones.fileio import atomic_write

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# The study's base detector config (the quickstart before the study chose its backbone).
QUICKSTART = osp.join(REPO, 'configs', 'quickstart', 'atss_vovnet-19-slim-dw-ese_fpn_demo.py')
GET_FLOPS = osp.join(REPO, 'tools', 'analysis', 'get_flops.py')
RECORD_VERSION = 1
REFERENCE = 'mmdet-ResNet-18'
P2_P5 = (4, 8, 16, 32)  # the quickstart head's strides
P3_P6 = (8, 16, 32)  # backbones without a stride-4 level: the FPN adds P6, head at 8..64

# Every candidate trains from scratch: nothing frozen, BN statistics train, no weights loaded.
FROM_SCRATCH = dict(frozen_stages=-1, norm_eval=False, init_cfg=None)


@dataclass(frozen=True)
class Candidate:
    """One backbone of the study.

    ``strides`` are the strides of the feature maps the backbone config returns: (4, 8, 16, 32)
    for the quickstart's P2-P5 head, or (8, 16, 32) for a backbone without a stride-4 level,
    whose detector gets P3-P6 (the FPN's extra conv adds P6; the head's anchors at 8..64).
    ``act_learn_ramp`` (VanillaNet): the fraction of the run over which
    ``VanillaNetActLearnHook`` ramps the activations, as the VanillaNet demo config does.
    """
    name: str
    family: str
    backbone: dict
    strides: Tuple[int, ...] = P2_P5
    baseline: bool = False  # an mmdet backbone (highlighted in the report)
    note: str = ''
    act_learn_ramp: float = 0.0

    def backbone_cfg(self) -> dict:
        return {**copy.deepcopy(self.backbone), **FROM_SCRATCH}

    @property
    def levels(self) -> str:
        return 'P2-P5' if tuple(self.strides) == P2_P5 else 'P3-P6'


def _vovnet(arch: str) -> Candidate:
    return Candidate(f'VoVNet-{arch[2:]}', 'VoVNet',
                     dict(type='VoVNet', arch=arch, out_indices=(0, 1, 2, 3)))


CANDIDATES: Tuple[Candidate, ...] = (
    _vovnet('V-19-slim-dw-eSE'),
    _vovnet('V-19-dw-eSE'),
    _vovnet('V-19-slim-eSE'),
    Candidate('ShuffleNetV2-x1.0', 'ShuffleNetV2',
              dict(type='ShuffleNetV2', widen_factor=1.0, out_indices=(0, 1, 2)), strides=P3_P6,
              note='no stride-4 stage (its stem ends at stride 4; conv5 is a second stride-32 '
              'map): strides 8/16/32 with a P3-P6 FPN and head'),
    Candidate('YOLOv8-n', 'YOLOv8 CSPDarknet',
              dict(type='YOLOv8CSPDarknet', arch='n', out_indices=(0, 1, 2, 3))),
    Candidate('YOLOv8-s', 'YOLOv8 CSPDarknet',
              dict(type='YOLOv8CSPDarknet', arch='s', out_indices=(0, 1, 2, 3))),
    Candidate('VanillaNet-7', 'VanillaNet',
              dict(type='VanillaNet', arch='vanillanet_7', out_indices=(0, 1, 2, 4)),
              act_learn_ramp=1 / 3,
              note='vanillanet_5/6 have no stride-4 block; vanillanet_7 is the smallest named '
              'arch with strides 4/8/16/32'),
    Candidate('MogaNet-xtiny', 'MogaNet',
              dict(type='MogaNet', arch='xtiny', out_indices=(0, 1, 2, 3))),
    Candidate('PResNet-18', 'PResNet (ResNet-vd)',
              dict(type='PResNet', depth=18, out_indices=(0, 1, 2, 3))),
    Candidate('HGNetV2-b0', 'HGNetV2', dict(type='HGNetV2', arch='b0', out_indices=(0, 1, 2, 3))),
    Candidate('HGNetV2-b1', 'HGNetV2', dict(type='HGNetV2', arch='b1', out_indices=(0, 1, 2, 3))),
    Candidate('timm-resnet18d', 'timm',
              dict(type='TimmBackbone', model_name='resnet18d', out_indices=(0, 1, 2, 3))),
    Candidate('timm-efficientnet_b0', 'timm',
              dict(type='TimmBackbone', model_name='efficientnet_b0', out_indices=(0, 1, 2, 3))),
    Candidate(REFERENCE, 'mmdet ResNet',
              dict(type='mmdet.ResNet', depth=18, out_indices=(0, 1, 2, 3)), baseline=True),
    Candidate('mmdet-ResNet-50', 'mmdet ResNet',
              dict(type='mmdet.ResNet', depth=50, out_indices=(0, 1, 2, 3)), baseline=True),
)
CANDIDATE_NAMES = tuple(c.name for c in CANDIDATES)


def candidate(name: str) -> Candidate:
    """The candidate called ``name`` (a ValueError listing the valid names if there is none)."""
    select_candidates([name])
    return CANDIDATES[CANDIDATE_NAMES.index(name)]


def select_candidates(names: Optional[Sequence[str]] = None) -> List[Candidate]:
    """The candidates named (all by default), in table order; the R18 reference always included.

    Raises:
        ValueError: for an unknown or repeated name, listing the valid names.
    """
    if names is None:
        return list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATE_NAMES]
    if unknown:
        hints = []
        for n in unknown:
            close = difflib.get_close_matches(n, CANDIDATE_NAMES, n=1, cutoff=0.5)
            if close:
                hints.append(f'{n!r}: did you mean {close[0]!r}?')
        raise ValueError(f'--candidates: {unknown} {"is" if len(unknown) == 1 else "are"} not '
                         f'a study candidate{" (" + "; ".join(hints) + ")" if hints else ""}; '
                         f'choose from {", ".join(CANDIDATE_NAMES)}.')
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ValueError(f'--candidates: {repeated} given more than once.')
    wanted = set(names) | {REFERENCE}
    return [c for c in CANDIDATES if c.name in wanted]


# ---------------------------------------------------------------------------------- configs


_FEATURE_INFO: dict = {}  # memo: canonical backbone config -> FeatureInfo


def feature_info(cand: Candidate):
    """Channels and strides of the candidate's backbone (built on the meta device), checked
    against the strides the candidate declares."""
    from mmbackbones.models import get_feature_info
    key = _canonical(cand.backbone_cfg())
    if key not in _FEATURE_INFO:
        _FEATURE_INFO[key] = get_feature_info(cand.backbone_cfg())
    info = _FEATURE_INFO[key]
    if tuple(info.strides) != tuple(cand.strides):
        raise ValueError(f'candidate {cand.name}: the backbone returns strides '
                         f'{list(info.strides)}, the study expects {list(cand.strides)} '
                         f'({cand.levels}); fix its out_indices in CANDIDATES.')
    return info


def warmup_iters(iters: int, base_iters: int, base_warmup: int) -> int:
    """The quickstart's warm-up length, scaled to ``iters`` (at least 1, less than ``iters``)."""
    return min(max(1, round(iters * base_warmup / base_iters)), iters - 1)


@functools.lru_cache(maxsize=1)
def _quickstart():
    from mmengine.config import Config
    return Config.fromfile(QUICKSTART)


AMP_CHOICES = ('fp32', 'bf16')
#: Where a study keeps its records and phase-1 timings (``--results-dir``'s default).
RESULTS_DIR = osp.join('docs', 'backbone_study', 'results')


def build_config(cand: Candidate, *, iters: int, seed: int, data_root: str, work_dir: str,
                 cfg_options: Optional[dict] = None, amp: str = 'fp32'):
    """The quickstart config with ``cand``'s backbone, ``iters`` iterations and ``seed``.

    The neck's ``in_channels`` are read from the backbone; a P3-P6 candidate moves the head's
    anchors to strides 8..64. Checkpoints are off (a study keeps metrics, not weights);
    ``cfg_options`` (a dict of dotted keys, as ``--cfg-options``) apply last. ``amp='bf16'``:
    training and validation under CPU bf16 autocast, as ``tools/train.py --amp`` sets them
    (``CPUBF16AmpOptimWrapper``, ``CPUBF16ValLoop``); whether this CPU has bf16 kernels is
    checked by :class:`Study`, not here (a config hash is machine-independent).
    """
    from mmengine.config import ConfigDict
    if iters < 2:
        raise ValueError(f'iters={iters}: a run needs at least 2 iterations (warm-up + cosine).')
    cfg = copy.deepcopy(_quickstart())
    base_iters = cfg.train_cfg.max_iters
    warm, cosine = cfg.param_scheduler
    cfg.model.backbone = ConfigDict(cand.backbone_cfg())
    cfg.model.neck.in_channels = list(feature_info(cand).channels)
    if tuple(cand.strides) == P3_P6:
        cfg.model.bbox_head.anchor_generator.strides = [8, 16, 32, 64]
    from mmbackbones.datasets import use_demo_data_root
    use_demo_data_root(cfg, data_root)
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    end = warmup_iters(iters, base_iters, warm.end)
    warm.end = end
    cosine.begin, cosine.end = end, iters
    cfg.param_scheduler = [warm, cosine]
    cfg.default_hooks.checkpoint = None
    cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]
    if cand.act_learn_ramp:
        cfg.custom_hooks = [dict(type='VanillaNetActLearnHook', by_epoch=False,
                                 ramp=max(1, round(iters * cand.act_learn_ramp)))]
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = work_dir
    if amp not in AMP_CHOICES:
        raise ValueError(f'amp={amp!r}: choose one of {list(AMP_CHOICES)}.')
    if amp == 'bf16':
        cfg.optim_wrapper.type = 'CPUBF16AmpOptimWrapper'
        cfg.val_cfg = ConfigDict(type='CPUBF16ValLoop')
        cfg.test_cfg = ConfigDict(type='CPUBF16TestLoop')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def is_bf16(cfg) -> bool:
    """Whether a study config trains under CPU bf16 autocast (``build_config(amp='bf16')``)."""
    return cfg.optim_wrapper.get('type') == 'CPUBF16AmpOptimWrapper'


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=repr, separators=(',', ':'))


def _sha(obj) -> str:
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()


def data_fingerprint(data_root: str) -> str:
    """sha256 of the data set's annotation files (the images follow from them and the seed)."""
    digest = hashlib.sha256()
    for split in ('train', 'val'):
        path = osp.join(data_root, 'annotations', f'instances_{split}.json')
        with open(path, 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()


def config_hash(cand: Candidate, *, cfg_options: Optional[dict], threads: int,
                data_sha: str, amp: str = 'fp32') -> str:
    """What a run's result depends on, but for the iteration count and the seed: the full config
    (paths replaced; under bf16 its optim wrapper and loops), the data, the thread count and the
    record version. Memoised."""
    memo_key = _canonical([cand.name, cand.backbone_cfg(), cand.strides, cand.act_learn_ramp,
                           cfg_options, threads, data_sha, amp])
    if memo_key not in _HASHES:
        _HASHES[memo_key] = _config_hash(cand, cfg_options, threads, data_sha, amp)
    return _HASHES[memo_key]


_HASHES: Dict[str, str] = {}


def _config_hash(cand: Candidate, cfg_options: Optional[dict], threads: int,
                 data_sha: str, amp: str) -> str:
    cfg = build_config(cand, iters=1000, seed=0, data_root='<data_root>', work_dir='<work_dir>',
                       cfg_options=cfg_options, amp=amp)
    state = cfg.to_dict()
    for key in ('work_dir', 'train_cfg', 'param_scheduler', 'randomness', 'custom_hooks'):
        state.pop(key, None)
    # The schedule and hooks are functions of the iteration count, which is part of the key.
    return _sha(dict(version=RECORD_VERSION, config=state, data=data_sha, threads=threads,
                     act_learn_ramp=cand.act_learn_ramp))[:16]


# ---------------------------------------------------------------------------------- plan


def plan_iterations(budget_s: float, ref_train_ms: float,
                    ratios: Dict[str, float]) -> Tuple[int, Dict[str, int]]:
    """``N_R18 = round(B / t_ref)``, each candidate ``max(2, round(N_R18 / r))``."""
    if not budget_s > 0:
        raise ValueError(f'budget_s={budget_s!r} must be > 0 seconds.')
    if not ref_train_ms > 0:
        raise ValueError(f'ref_train_ms={ref_train_ms!r} must be > 0.')
    n_ref = max(2, round(budget_s * 1e3 / ref_train_ms))
    out = {}
    for name, ratio in ratios.items():
        if not ratio > 0:
            raise ValueError(f'{name}: train-step ratio {ratio!r} must be > 0.')
        out[name] = max(2, round(n_ref / ratio))
    return n_ref, out


# ---------------------------------------------------------------------------------- timing


def _scope():
    from mmengine.registry import init_default_scope
    import mmbackbones  # noqa: F401  (registrations)
    init_default_scope('mmdet')


def _build_detector(cfg):
    from mmdet.registry import MODELS
    _scope()
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    return model


def timing_inputs(cfg):
    """One training batch (the config's batch size, its train pipeline) and one val image."""
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate
    _scope()
    train = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
    batch = pseudo_collate([train[i % len(train)]
                            for i in range(cfg.train_dataloader.batch_size)])
    val = DATASETS.build(copy.deepcopy(cfg.val_dataloader.dataset))
    return batch, pseudo_collate([val[0]])


def _train_step(cfg, batch) -> Callable[[], object]:
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper
    model = _build_detector(cfg).train()
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # not one line per parameter group, for every timing
    try:
        optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    finally:
        logger.setLevel(level)
    return lambda: model.train_step(batch, optim)


def _inference(cfg, image) -> Callable[[], object]:
    import torch
    model = _build_detector(cfg).eval()
    data = model.data_preprocessor(image, False)
    bf16 = is_bf16(cfg)

    def run():
        # mode='tensor' is the network (backbone + FPN + head): all of it under autocast
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            return model(data['inputs'], data['data_samples'], mode='tensor')
    return run


def measure_pair(cand_cfg, ref_cfg, inputs, *, rounds: int, warmup: int) -> dict:
    """Paired train-step and inference timings of two detector configs (candidate, R18)."""
    from mmbackbones.analysis.timing import time_pair
    batch, image = inputs
    out = {}
    for kind, make in (('train', lambda c: _train_step(c, batch)),
                       ('infer', lambda c: _inference(c, image))):
        pair = time_pair(make(cand_cfg), make(ref_cfg), rounds=rounds, warmup=warmup)
        out[kind] = dict(ms=pair.ours_ms, ref_ms=pair.peer_ms, ratio=pair.ratio,
                         ratio_low=pair.ratio_low, ratio_high=pair.ratio_high,
                         rounds=pair.rounds)
        gc.collect()
    return out


# ---------------------------------------------------------------------------------- settings


@dataclass
class StudySettings:
    budget_s: float
    candidates: List[Candidate]
    seeds: List[int] = field(default_factory=lambda: [0])
    top_k_second_seed: int = 0
    results_dir: str = RESULTS_DIR
    work_dir: str = osp.join('work_dirs', 'backbone_study')
    data_root: str = osp.join('data', 'demo')
    threads: int = 2
    timing_rounds: int = 8
    timing_warmup: int = 1
    cfg_options: dict = field(default_factory=dict)
    command: str = ''  # the normalised command line, for the report
    jobs: int = 1  # training runs at once, each in its own process with train_threads threads
    amp: str = 'fp32'  # 'bf16': phase 1 and training under CPU bf16 autocast

    def validate(self) -> None:
        if not (isinstance(self.budget_s, (int, float)) and self.budget_s > 0
                and math.isfinite(self.budget_s)):
            raise ValueError(f'--budget-s: {self.budget_s!r} must be a positive number of '
                             'seconds.')
        if not self.seeds or any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(
                self.seeds):
            raise ValueError(f'--seeds: {self.seeds} must be distinct non-negative integers.')
        if not 0 <= self.top_k_second_seed <= len(self.candidates):
            raise ValueError(f'--top-k-second-seed: {self.top_k_second_seed} must be in 0..'
                             f'{len(self.candidates)} (the number of candidates).')
        if self.threads < 1:
            raise ValueError(f'--threads: {self.threads} must be >= 1.')
        if not isinstance(self.jobs, int) or self.jobs < 1:
            raise ValueError(f'--jobs: {self.jobs!r} must be an integer >= 1.')
        if self.amp not in AMP_CHOICES:
            raise ValueError(f'--amp: {self.amp!r} is not one of {list(AMP_CHOICES)}.')
        if self.timing_rounds < 2 or self.timing_warmup < 0:
            raise ValueError(f'--timing-rounds {self.timing_rounds} must be >= 2 and '
                             f'--timing-warmup {self.timing_warmup} >= 0.')

    @property
    def extra_seed(self) -> int:
        return max(self.seeds) + 1

    @property
    def train_threads(self) -> int:
        """Torch threads of each training run: ``threads`` split over the ``jobs`` runs."""
        return max(1, self.threads // self.jobs)

    def to_spec(self) -> dict:
        """These settings as JSON (candidates by name), for a training job's process."""
        spec = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        spec['candidates'] = [c.name for c in self.candidates]
        return spec

    @classmethod
    def from_spec(cls, spec: dict) -> 'StudySettings':
        spec = dict(spec)
        return cls(candidates=select_candidates(spec.pop('candidates')), **spec)


def record_name(name: str, seed: int, budget_s: float, chash: str) -> str:
    return f'{name}__seed{seed}__budget{budget_s:g}s__{chash}.json'


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path: str, obj: dict) -> None:
    data = (json.dumps(obj, indent=1, sort_keys=True) + '\n').encode()
    atomic_write(path, lambda f: f.write(data))


def prepare_study_data(data_root: str, log: Callable[[str], None] = print) -> None:
    """The study's data set in ``data_root``: used as it is if there, else generated as
    ``tools/demo.py`` does."""
    from mmbackbones.datasets import make_demo_dataset
    if osp.isfile(osp.join(data_root, 'annotations', 'instances_val.json')):
        log(f'[study] data: {data_root} (existing data set, used as it is)')
        return
    size = tuple(_quickstart().image_size)
    log(f'[study] data: generating the demo data set in {data_root} '
        f'(800 train / 150 val, {size[0]} x {size[1]} px, seed 0, as tools/demo.py)')
    make_demo_dataset(data_root, num_train=800, num_val=150, image_size=size, seed=0,
                      progress=False)


class Study:
    """Plans and runs the study. ``trainer`` (train + evaluate one config), ``timer``
    (phase-1 paired timing) and ``complexity`` (params / FLOPs) can be replaced, e.g. in tests."""

    def __init__(self, settings: StudySettings, *, trainer: Optional[Callable] = None,
                 timer: Optional[Callable] = None, complexity: Optional[Callable] = None,
                 log: Callable[[str], None] = print, check_cpu: bool = True) -> None:
        settings.validate()
        if settings.amp == 'bf16' and check_cpu:  # False: only to read its records
            from mmbackbones.engine.amp import CPUBF16UnsupportedError, check_cpu_bf16
            try:
                check_cpu_bf16('--amp bf16')
            except CPUBF16UnsupportedError as exc:
                raise ValueError(str(exc)) from exc
        if settings.jobs > 1 and trainer is not None:
            raise ValueError(f'--jobs {settings.jobs}: parallel runs train in new processes '
                             'with the default trainer; a custom trainer needs jobs=1.')
        self.s = settings
        self.trainer = trainer or train_and_evaluate
        self.timer = timer or measure_pair
        self.complexity = complexity or detector_complexity
        self.log = log
        self._hashes: Dict[str, str] = {}
        self._inputs = None

    # -- keys
    def prepare_data(self) -> None:
        prepare_study_data(self.s.data_root, self.log)

    @property
    def data_sha(self) -> str:
        """:func:`data_fingerprint` of the data root, computed once."""
        if not hasattr(self, '_data_sha'):
            self._data_sha = data_fingerprint(self.s.data_root)
        return self._data_sha

    def chash(self, cand: Candidate) -> str:
        if cand.name not in self._hashes:
            self._hashes[cand.name] = config_hash(
                cand, cfg_options=self.s.cfg_options,
                threads=self.s.threads, data_sha=self.data_sha, amp=self.s.amp)
        return self._hashes[cand.name]

    def cfg(self, cand: Candidate, iters: int = 1000, seed: int = 0, work_dir: str = ''):
        return build_config(cand, iters=iters, seed=seed, data_root=self.s.data_root,
                            work_dir=work_dir or self.s.work_dir,
                            cfg_options=self.s.cfg_options, amp=self.s.amp)

    def timing_key(self, cand: Candidate) -> str:
        ref = candidate(REFERENCE)
        return _sha(dict(cand=self.chash(cand), ref=self.chash(ref), rounds=self.s.timing_rounds,
                         warmup=self.s.timing_warmup, threads=self.s.threads))[:16]

    # -- phase 1
    def timing(self, cand: Candidate, *, measure: bool = True) -> Optional[dict]:
        """The phase-1 record of ``cand`` (``'reference'`` for R18 vs R18), measured if missing."""
        tag = 'reference' if cand.name == REFERENCE else cand.name
        suffix = '' if self.s.amp == 'fp32' else f'__{self.s.amp}'
        path = osp.join(self.s.results_dir, 'timing', f'{tag}{suffix}.json')
        key = self.timing_key(cand)
        rec = _read_json(path)
        if rec is not None and rec.get('key') == key:
            return rec
        if rec is not None:
            self.log(f'[study] timing {tag}: recorded for other settings (key {rec.get("key")}, '
                     f'now {key}){"; measuring again" if measure else ""}')
        if not measure:
            return None
        if self._inputs is None:
            self._inputs = timing_inputs(self.cfg(candidate(REFERENCE)))
        self.log(f'[study] timing {tag} vs {REFERENCE} ({self.s.timing_rounds} paired rounds) ...')
        start = time.perf_counter()
        ref_cfg = self.cfg(candidate(REFERENCE))
        cand_cfg = self.cfg(cand)
        result = self.timer(cand_cfg, ref_cfg, self._inputs, rounds=self.s.timing_rounds,
                            warmup=self.s.timing_warmup)
        result.update(self.complexity(cand_cfg))
        from mmbackbones.analysis.timing import cpu_description
        rec = dict(version=RECORD_VERSION, key=key, candidate=tag, threads=self.s.threads,
                   amp=self.s.amp, cpu=cpu_description(),
                   rounds=self.s.timing_rounds, warmup=self.s.timing_warmup,
                   seconds=round(time.perf_counter() - start, 1), **result)
        _write_json(path, rec)
        self.log(f'[study] timing {tag}: train {result["train"]["ms"]:.1f} ms '
                 f'(x{result["train"]["ratio"]:.3f} R18), infer {result["infer"]["ms"]:.1f} ms '
                 f'(x{result["infer"]["ratio"]:.3f})')
        return rec

    def plan(self, *, measure: bool = True) -> Optional[dict]:
        """Timings of every candidate and the iterations they get; None if ``measure`` is False
        and a timing is missing."""
        ref = self.timing(candidate(REFERENCE), measure=measure)
        timings = {}
        for cand in self.s.candidates:
            rec = ref if cand.name == REFERENCE else self.timing(cand, measure=measure)
            if ref is None or rec is None:
                return None
            timings[cand.name] = rec
        ref_ms = (ref['train']['ms'] + ref['train']['ref_ms']) / 2
        ratios = {name: (1.0 if name == REFERENCE else rec['train']['ratio'])
                  for name, rec in timings.items()}
        n_ref, iters = plan_iterations(self.s.budget_s, ref_ms, ratios)
        return dict(ref_train_ms=ref_ms, ref_iters=n_ref, iters=iters, timings=timings,
                    ref_timing=ref)

    # -- runs
    def record_path(self, cand: Candidate, seed: int) -> str:
        return osp.join(self.s.results_dir,
                        record_name(cand.name, seed, self.s.budget_s, self.chash(cand)))

    def finished(self, cand: Candidate, seed: int, iters: int) -> Optional[dict]:
        rec = _read_json(self.record_path(cand, seed))
        if rec is None:
            return None
        same = (rec.get('version') == RECORD_VERSION and rec.get('candidate') == cand.name
                and rec.get('seed') == seed and rec.get('budget_s') == self.s.budget_s
                and rec.get('config_hash') == self.chash(cand) and rec.get('iters') == iters)
        return rec if same else None

    def all_seeds(self) -> List[int]:
        return self.s.seeds + ([self.s.extra_seed] if self.s.top_k_second_seed else [])

    def current_records(self) -> List[dict]:
        """The records these settings use (iteration counts checked when timings exist)."""
        plan = self.plan(measure=False)
        out = []
        for cand in self.s.candidates:
            for seed in self.all_seeds():
                rec = _read_json(self.record_path(cand, seed))
                if rec is None:
                    continue
                iters = plan['iters'][cand.name] if plan else rec.get('iters')
                if self.finished(cand, seed, iters) is not None:
                    out.append(rec)
        return out

    def stale_records(self) -> List[dict]:
        """Records in the results dir that the current settings do not use."""
        current = {osp.basename(self.record_path(c, s)) for c in self.s.candidates
                   for s in self.all_seeds()}
        out = []
        for name in sorted(os.listdir(self.s.results_dir)) if osp.isdir(
                self.s.results_dir) else []:
            if name.endswith('.json') and name not in current:
                rec = _read_json(osp.join(self.s.results_dir, name))
                if rec and 'candidate' in rec:
                    out.append(rec)
        return out

    def runs(self, plan: dict, records: Dict[Tuple[str, int], dict]) -> List[Tuple[Candidate,
                                                                                    int]]:
        """Every (candidate, seed) of the study: all seeds, then the extra seed for the top-k
        candidates by mean mAP over the first pass (known only once that pass is done)."""
        todo = [(c, s) for c in self.s.candidates for s in self.s.seeds]
        if self.s.top_k_second_seed and all(k in records for k in
                                            [(c.name, s) for c, s in todo]):
            for name in top_k(records, self.s.top_k_second_seed, self.s.seeds):
                todo.append((candidate(name), self.s.extra_seed))
        return todo

    def run(self, *, dry_run: bool = False) -> int:
        """Run what is missing; returns the number of failed runs. Phase 1 uses ``threads``
        torch threads; each training run ``train_threads`` (``threads // jobs``)."""
        import torch
        threads = torch.get_num_threads()
        torch.set_num_threads(self.s.threads)
        try:
            return self._run(dry_run)
        finally:
            torch.set_num_threads(threads)

    def _run(self, dry_run: bool) -> int:
        self.prepare_data()
        if dry_run:
            self.log('[study] dry run: phase-1 timings are measured (and kept for the real '
                     'study); nothing is trained')
        plan = self.plan()
        if dry_run:
            self.log(format_plan(self.s, plan))
            return 0
        records: Dict[Tuple[str, int], dict] = {}
        failed = 0
        done_keys = set()
        while True:
            todo = [(c, s) for c, s in self.runs(plan, records) if (c.name, s) not in done_keys]
            if not todo:
                break
            pending = []
            for cand, seed in todo:
                done_keys.add((cand.name, seed))
                iters = plan['iters'][cand.name]
                rec = self.finished(cand, seed, iters)
                if rec is not None:
                    self.log(f'[study] {cand.name} seed {seed}: done earlier, not re-run '
                             f'(mAP {rec["bbox_mAP"]:.3f})')
                    records[(cand.name, seed)] = rec
                else:
                    pending.append((cand, seed, iters))
            runner = self._run_here if self.s.jobs == 1 else self._run_in_jobs
            for cand, seed, rec, error in runner(pending, plan):
                if rec is None:
                    failed += 1
                    self.log(f'[study] {cand.name} seed {seed}: FAILED: {error}')
                    continue
                records[(cand.name, seed)] = rec
                self.log(f'[study] {cand.name} seed {seed}: mAP {rec["bbox_mAP"]:.3f} '
                         f'({rec["train_wall_s"]:.0f} s)')
        stale = self.stale_records()
        if stale:
            self.log(f'[study] {len(stale)} record(s) in {self.s.results_dir} belong to other '
                     'settings (budget / config / seed) and are not used.')
        return failed

    def _run_here(self, pending, plan):
        """Train the pending runs one after the other in this process."""
        import torch
        torch.set_num_threads(self.s.train_threads)
        for cand, seed, iters in pending:
            self.log(f'[study] {cand.name} seed {seed}: training {iters} iterations ...')
            try:
                yield cand, seed, self.execute(cand, seed, iters, plan), None
            except Exception as exc:  # noqa: BLE001 - reported, the study goes on
                yield cand, seed, None, f'{type(exc).__name__}: {exc}'

    def run_dir(self, cand: Candidate, seed: int) -> str:
        return osp.join(self.s.work_dir, cand.name, f'seed_{seed}')

    def _run_in_jobs(self, pending, plan, poll_s: float = 0.5):
        """Train the pending runs ``jobs`` at a time, each in a new Python process
        (:func:`job_main`, given the job's JSON file) that writes its record.

        A job's output goes to ``<run dir>/study_job.log``. Its iteration count comes from the
        phase-1 timings, so the other jobs' load changes its wall time, not its result. If this
        process is interrupted, the jobs still running are terminated (a record is written
        atomically at a job's end, so none is left half-written).
        """
        queue = list(pending)
        running: Dict[subprocess.Popen, tuple] = {}
        env = dict(os.environ, OMP_NUM_THREADS=str(self.s.train_threads),
                   PYTHONPATH=os.pathsep.join(
                       p for p in (REPO, os.environ.get('PYTHONPATH', '')) if p))
        try:
            while queue or running:
                while queue and len(running) < self.s.jobs:
                    cand, seed, iters = queue.pop(0)
                    run_dir = self.run_dir(cand, seed)
                    os.makedirs(run_dir, exist_ok=True)
                    spec_path = osp.join(run_dir, 'study_job.json')
                    _write_json(spec_path, dict(settings=self.s.to_spec(), candidate=cand.name,
                                                seed=seed, iters=iters))
                    log_path = osp.join(run_dir, 'study_job.log')
                    with open(log_path, 'wb') as log_file:
                        proc = subprocess.Popen(
                            [sys.executable, '-c', _JOB_COMMAND, spec_path], stdout=log_file, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env)
                    running[proc] = (cand, seed, iters, log_path)
                    self.log(f'[study] {cand.name} seed {seed}: training {iters} iterations '
                             f'(job {len(running)}/{self.s.jobs}, {self.s.train_threads} '
                             f'thread(s), log {log_path}) ...')
                finished = [p for p in running if p.poll() is not None]
                if not finished:
                    time.sleep(poll_s)
                for proc in finished:
                    cand, seed, iters, log_path = running.pop(proc)
                    rec = self.finished(cand, seed, iters) if proc.returncode == 0 else None
                    if rec is not None:
                        yield cand, seed, rec, None
                        continue
                    with open(log_path, 'rb') as f:
                        tail = f.read()[-1500:].decode(errors='replace').strip()
                    why = (f'exit code {proc.returncode}' if proc.returncode else
                           'exit code 0 but no matching record')
                    yield cand, seed, None, f'{why}; the end of {log_path}:\n{tail}'
        finally:
            for proc in running:
                proc.terminate()
            for proc in running:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def execute(self, cand: Candidate, seed: int, iters: int, plan: dict) -> dict:
        from mmbackbones.analysis.timing import cpu_description
        work_dir = self.run_dir(cand, seed)
        cfg = self.cfg(cand, iters=iters, seed=seed, work_dir=work_dir)
        result = self.trainer(cfg, work_dir)
        timing = plan['timings'][cand.name]
        ref_timing = plan['ref_timing']
        is_ref = cand.name == REFERENCE
        rec = dict(
            version=RECORD_VERSION, candidate=cand.name, family=cand.family, levels=cand.levels,
            baseline=cand.baseline, seed=seed, budget_s=self.s.budget_s,
            config_hash=self.chash(cand), iters=iters, ref_iters=plan['ref_iters'],
            threads=self.s.threads, train_threads=self.s.train_threads, jobs=self.s.jobs,
            amp=self.s.amp, cpu=cpu_description(), timing_cpu=timing.get('cpu'),
            command=self.s.command,
            backbone=cand.backbone_cfg(),
            train_ratio=1.0 if is_ref else timing['train']['ratio'],
            train_ratio_interval=[1.0, 1.0] if is_ref else [timing['train']['ratio_low'],
                                                            timing['train']['ratio_high']],
            train_ms=plan['ref_train_ms'] * (1.0 if is_ref else timing['train']['ratio']),
            ref_train_ms=plan['ref_train_ms'],
            # R18 against a second R18: the noise floor of the paired ratios on this machine
            ref_self_ratio=[ref_timing['train'][k] for k in ('ratio', 'ratio_low', 'ratio_high')],
            infer_ratio=1.0 if is_ref else timing['infer']['ratio'],
            infer_ms=(ref_timing['infer']['ms'] + ref_timing['infer']['ref_ms']) / 2
            if is_ref else timing['infer']['ms'],
            ref_infer_ms=(ref_timing['infer']['ms'] + ref_timing['infer']['ref_ms']) / 2,
            **{k: timing[k] for k in COMPLEXITY_KEYS}, **result)
        _write_json(self.record_path(cand, seed), rec)
        return rec


def top_k(records: Dict[Tuple[str, int], dict], k: int, seeds: Sequence[int]) -> List[str]:
    """The ``k`` candidates with the best mean mAP over ``seeds`` (ties by name)."""
    means: Dict[str, List[float]] = {}
    for (name, seed), rec in records.items():
        if seed in seeds:
            means.setdefault(name, []).append(rec['bbox_mAP'])
    order = sorted(means, key=lambda n: (-statistics.fmean(means[n]), n))
    return order[:k]


def format_plan(s: StudySettings, plan: dict) -> str:
    lines = [f'Plan: budget {s.budget_s:g} s per run; {REFERENCE} step {plan["ref_train_ms"]:.1f}'
             f' ms (t_ref, {s.threads} threads) -> N_R18 = {plan["ref_iters"]} iterations',
             '| candidate | levels | train ms/iter | ratio vs R18 [90% CI] | iterations | '
             'est. train s | infer ms | seeds |', '|:--|:--|--:|--:|--:|--:|--:|:--|']
    total = 0.0
    for cand in s.candidates:
        t = plan['timings'][cand.name]
        is_ref = cand.name == REFERENCE
        ratio = 1.0 if is_ref else t['train']['ratio']
        ci = '' if is_ref else f' [{t["train"]["ratio_low"]:.2f}, {t["train"]["ratio_high"]:.2f}]'
        iters = plan['iters'][cand.name]
        ms = plan['ref_train_ms'] * ratio
        est = iters * ms / 1e3
        total += est * len(s.seeds)
        infer = (t['infer']['ms'] + t['infer']['ref_ms']) / 2 if is_ref else t['infer']['ms']
        lines.append(f'| {cand.name} | {cand.levels} | {ms:.1f} | {ratio:.3f}{ci} | {iters} | '
                     f'{est:.0f} | {infer:.1f} | {",".join(map(str, s.seeds))} |')
    runs = len(s.candidates) * len(s.seeds)
    lines.append(f'{runs} runs: about {total / 60:.1f} min of training')
    if s.top_k_second_seed:
        extra = s.top_k_second_seed * s.budget_s
        lines.append(f'+ {s.top_k_second_seed} runs with seed {s.extra_seed} for the top '
                     f'{s.top_k_second_seed} by mAP (chosen after the first pass): about '
                     f'{extra / 60:.1f} min')
        total += extra
    lines.append(f'Estimated total: {total / 60:.1f} min of training, plus one evaluation per '
                 'run (the val split) and model building.')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------- one run


def _get_flops_module():
    import importlib.util
    if not osp.isfile(GET_FLOPS):
        raise FileNotFoundError(f'{GET_FLOPS} is missing: the study counts FLOPs with '
                                'tools/analysis/get_flops.py; run it from a source checkout.')
    spec = importlib.util.spec_from_file_location('mmb_get_flops', GET_FLOPS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_RUNS = 0  # runs started in this process


def train_and_evaluate(cfg, work_dir: str) -> dict:
    """Train ``cfg`` with mmengine's Runner (validating after the last iteration); return the
    COCO bbox metrics of that validation and the training wall time."""
    from mmengine.logging import print_log

    from mmbackbones.engine import launch
    os.makedirs(work_dir, exist_ok=True)
    launch.check_neck_in_channels(cfg)
    # mmengine keeps its visualizer, logger and message hub per name, process-wide: without
    # names of its own, a second run in this process would write into the first run's logs.
    global _RUNS
    _RUNS += 1
    unique = f'backbone_study_{os.getpid()}_{_RUNS}_{osp.basename(osp.dirname(work_dir))}'
    cfg.experiment_name = unique
    cfg.visualizer.name = unique
    runner = launch.build_runner(cfg)
    start = time.perf_counter()
    runner.train()
    wall = time.perf_counter() - start
    hub = runner.message_hub
    metrics = {}
    scalars = hub.log_scalars
    for key, out in (('coco/bbox_mAP', 'bbox_mAP'), ('coco/bbox_mAP_50', 'bbox_mAP_50'),
                     ('coco/bbox_mAP_75', 'bbox_mAP_75')):
        if f'val/{key}' in scalars:
            metrics[out] = float(scalars[f'val/{key}'].current())
    empty = not metrics
    if empty:
        # mmdet's CocoMetric returns nothing when no box passed the score threshold: AP 0.
        print_log(f'{work_dir}: no predictions above the score threshold on the val split; '
                  'recording mAP 0 (empty_predictions=True)', logger='current',
                  level=logging.WARNING)
        metrics = dict(bbox_mAP=0.0, bbox_mAP_50=0.0, bbox_mAP_75=0.0)
    metrics['empty_predictions'] = empty
    del runner
    gc.collect()
    return dict(metrics, train_wall_s=round(wall, 1))


COMPLEXITY_KEYS = ('params', 'backbone_params', 'flops', 'flops_input', 'out_channels',
                   'out_strides')


def detector_complexity(cfg) -> dict:
    """Params and FLOPs of the detector (``tools/analysis/get_flops.py``'s
    ``detector_complexity``, one image of the config's size), the backbone's params and its
    feature channels / strides."""
    import pprint
    import tempfile
    from mmdet.registry import MODELS

    from mmbackbones.models import get_feature_info
    height, width = cfg.image_size
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'detector.py')  # the model alone: quick to parse
        with open(path, 'w') as f:
            f.write("default_scope = 'mmdet'\n"
                    f'model = {pprint.pformat(cfg.model.to_dict(), width=100)}\n')
        counts = _get_flops_module().detector_complexity(path, (height, width))
    _scope()
    backbone = MODELS.build(copy.deepcopy(cfg.model.backbone))
    info = get_feature_info(cfg.model.backbone)
    return dict(params=counts['params'], flops=counts['flops'], flops_input=[height, width],
                backbone_params=sum(p.numel() for p in backbone.parameters()),
                out_channels=list(info.channels), out_strides=list(info.strides))


# ---------------------------------------------------------------------------------- report


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the points ``(cost, value)`` that no other point dominates (cost no higher
    and value no lower, one of them strictly), in input order."""
    front = []
    for i, (ci, vi) in enumerate(points):
        dominated = any(cj <= ci and vj >= vi and (cj < ci or vj > vi)
                        for j, (cj, vj) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def aggregate(records: Sequence[dict]) -> List[dict]:
    """One row per candidate (mean over its seeds), in the order of :data:`CANDIDATES`."""
    by_name: Dict[str, List[dict]] = {}
    for rec in records:
        by_name.setdefault(rec['candidate'], []).append(rec)
    rows = []
    order = {n: i for i, n in enumerate(CANDIDATE_NAMES)}
    for name in sorted(by_name, key=lambda n: (order.get(n, len(order)), n)):
        recs = sorted(by_name[name], key=lambda r: r['seed'])
        first = recs[0]
        row = dict(candidate=name, family=first['family'], levels=first['levels'],
                   baseline=first['baseline'], seeds=[r['seed'] for r in recs],
                   iters=first['iters'], params=first['params'],
                   backbone_params=first['backbone_params'], flops=first['flops'],
                   train_ms=first['train_ms'], train_ratio=first['train_ratio'],
                   infer_ms=first['infer_ms'], infer_ratio=first['infer_ratio'],
                   maps=[r['bbox_mAP'] for r in recs])
        for key in ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75'):
            row[key] = statistics.fmean(r[key] for r in recs)
        rows.append(row)
    return rows


def _fmt_map(row: dict) -> str:
    if len(row['maps']) == 1:
        return f'{row["bbox_mAP"]:.3f}'
    return f'{row["bbox_mAP"]:.3f} ({" / ".join(f"{m:.3f}" for m in row["maps"])})'


def write_plot(rows: List[dict], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib import ticker
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, key, label in ((axes[0], 'infer_ms', 'inference latency, batch 1 at 192 px (ms)'),
                           (axes[1], 'train_ms', 'train step, batch 8 at 192 px (ms)')):
        points = [(r[key], r['bbox_mAP']) for r in rows]
        front = pareto_front(points)
        line = sorted(points[i] for i in front)
        ax.step([p[0] for p in line], [p[1] for p in line], where='post', color='tab:green',
                alpha=0.6, label='Pareto front')
        for i, r in enumerate(rows):
            style = dict(marker='s', color='tab:red') if r['baseline'] else dict(
                marker='o', color='tab:blue')
            ax.scatter([r[key]], [r['bbox_mAP']], s=60 if i in front else 30,
                       edgecolors='black' if i in front else 'none', zorder=3, **style)
            ax.annotate(r['candidate'], (r[key], r['bbox_mAP']), fontsize=7,
                        xytext=(4, 3), textcoords='offset points')
        ax.set_xscale('log')
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter('%g'))
        ax.xaxis.set_minor_formatter(ticker.FormatStrFormatter('%g'))
        ax.tick_params(axis='x', which='minor', labelsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel('COCO bbox mAP (val)')
        ax.grid(alpha=0.3)
    axes[0].scatter([], [], marker='s', color='tab:red', label='mmdet baseline')
    axes[0].scatter([], [], marker='o', color='tab:blue', label='mmbackbones / timm')
    axes[0].legend(fontsize=8, loc='lower right')
    fig.suptitle('Equal training time: mAP vs inference latency (left) and vs cost per '
                 'training iteration (right); outlined points are on the Pareto front',
                 fontsize=9)
    fig.tight_layout()
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=110,
                                             metadata={'Software': None}))
    plt.close(fig)


def _record_order(rec: dict):
    name = rec['candidate']
    return (CANDIDATE_NAMES.index(name) if name in CANDIDATE_NAMES else len(CANDIDATE_NAMES),
            name, rec['seed'])


def _noise_floor(rec: dict) -> str:
    ratio = rec.get('ref_self_ratio')
    if not ratio:
        return ''
    return (f' The same measurement of R18 against a second R18 gave x{ratio[0]:.3f} (90% '
            f'interval {ratio[1]:.3f}-{ratio[2]:.3f}): train-time ratios closer to 1 than that '
            'are not told apart.')


def seed_noise(rows: List[dict]) -> Optional[dict]:
    """The spread of mAP between seeds over the candidates with two or more: the mean and the
    largest (max - min), and how many candidates; None without any."""
    spreads = [max(r['maps']) - min(r['maps']) for r in rows if len(r['maps']) > 1]
    if not spreads:
        return None
    return dict(mean=statistics.fmean(spreads), max=max(spreads), count=len(spreads))


def _execution(records: List[dict]) -> str:
    """How the runs were executed (jobs at once, threads each), from the records."""
    ways = sorted({(r.get('jobs', 1), r.get('train_threads', r['threads'])) for r in records})
    text = '; '.join(f'{j} run(s) at a time with {t} thread(s) each' for j, t in ways)
    return (f' Training: {text}. The iteration counts come from phase 1, so how the runs were '
            'scheduled changes their wall time, not what they train.')


def _machines(records: List[dict]) -> str:
    """The CPUs that timed and trained the runs, from the records (older records name none)."""
    timing, runs = ('; '.join(sorted({r.get(k) or 'not recorded (an older record)'
                                      for r in records})) for k in ('timing_cpu', 'cpu'))
    if timing == runs:
        return f' CPU of phase 1 and the runs: {timing}.'
    return f' CPU of phase 1: {timing}. CPU of the runs: {runs}.'


def _precision(records: List[dict]) -> str:
    """Which precision phase 1 and the runs used, from the records."""
    amps = sorted({r.get('amp', 'fp32') for r in records})
    if amps == ['fp32']:
        return ' Precision: float32 throughout.'
    return (f' Precision: {" and ".join(amps)}; bf16 means phase 1, training and validation '
            'under CPU bf16 autocast (`--amp bf16`: float32 weights, `CPUBF16AmpOptimWrapper`, '
            'R18 timed under bf16 too).')


def _ranks(values: Dict[str, float], *, descending: bool) -> Dict[str, int]:
    order = sorted(values, key=lambda n: (-values[n] if descending else values[n], n))
    return {name: i + 1 for i, name in enumerate(order)}


def precision_section(compare: dict) -> List[str]:
    """The page's section on both precisions. ``compare``: ``amps`` (this page's first),
    and per precision ``plans`` (:meth:`Study.plan` or None: no phase 1 yet) and ``rows``
    (:func:`aggregate` of its records at the same budget)."""
    amps, plans, rows = compare['amps'], compare['plans'], compare['rows']
    if any(plans[a] is None for a in amps):
        missing = [a for a in amps if plans[a] is None]
        return ['## fp32 and bf16', '', f'No complete phase 1 under {", ".join(missing)} for '
                'these candidates yet: `--amp bf16 --dry-run` measures it.', '']
    names = [n for n in CANDIDATE_NAMES if all(n in plans[a]['iters'] for a in amps)]

    def ratio(a, name, kind):
        return 1.0 if name == REFERENCE else plans[a]['timings'][name][kind]['ratio']

    maps = {a: {r['candidate']: r for r in rows[a]} for a in amps}
    both = [n for n in names if all(n in maps[a] for a in amps)]
    rank = {a: _ranks({n: maps[a][n]['bbox_mAP'] for n in both}, descending=True)
            for a in amps}
    cpus = {a: plans[a]['ref_timing'].get('cpu') or 'not recorded' for a in amps}
    a0, a1 = amps
    lines = [
        '## fp32 and bf16', '',
        f'Phase 1 under each precision (bf16: CPU bf16 autocast, `--amp bf16`, with R18 '
        'timed under bf16 too), and the study under each precision at the same '
        f'{compare["budget_s"]:g} s budget where its runs exist. Ratios are to R18 in the same '
        f'precision. Phase 1 CPU: {a0}: {cpus[a0]}; {a1}: {cpus[a1]}. R18 trains '
        f'{plans[a0]["ref_iters"]} iterations in {a0} and {plans[a1]["ref_iters"]} in {a1} '
        f'({plans[a0]["ref_train_ms"]:.0f} and {plans[a1]["ref_train_ms"]:.0f} ms per step).',
        '' if cpus[a0] == cpus[a1] != 'not recorded' else
        '**The two phase 1s ran on different CPUs (or one names none), so a change of ratio '
        'below mixes precision and CPU.**',
        '',
        f'| candidate | train x R18 {a0} / {a1} | infer x R18 {a0} / {a1} | iterations {a0} / '
        f'{a1} | mAP {a0} / {a1} | mAP rank {a0} / {a1} |',
        '|:--|--:|--:|--:|--:|--:|']

    def cell(a, name):
        return _fmt_map(maps[a][name]) if name in maps[a] else 'not run'

    def order(n):  # run in both by rank, then by this precision's mAP, then not run
        return (n not in both, rank[a0].get(n, 0), -maps[a0][n]['bbox_mAP'] if n in maps[a0]
                else 1.0, n)

    for name in sorted(names, key=order):
        shown = f'**{name}**' if name.startswith('mmdet-') else name
        ranks = (f'{rank[a0][name]} / {rank[a1][name]}' if name in both else '-')
        lines.append(
            f'| {shown} | x{ratio(a0, name, "train"):.2f} / x{ratio(a1, name, "train"):.2f} | '
            f'x{ratio(a0, name, "infer"):.2f} / x{ratio(a1, name, "infer"):.2f} | '
            f'{plans[a0]["iters"][name]} / {plans[a1]["iters"][name]} | {cell(a0, name)} / '
            f'{cell(a1, name)} | {ranks} |')
    lines.append('')
    cost = {a: _ranks({n: ratio(a, n, 'train') for n in names}, descending=False)
            for a in amps}
    moved = sorted((n for n in names if cost[a0][n] != cost[a1][n]),
                   key=lambda n: (-abs(cost[a0][n] - cost[a1][n]), n))
    text = (f'Train-step cost order (cheapest first): {len(moved)} of {len(names)} candidates '
            f'change place from {a0} to {a1}')
    if moved:
        text += '; most: ' + ', '.join(
            f'{n} {cost[a0][n]} -> {cost[a1][n]} (x{ratio(a0, n, "train"):.2f} -> '
            f'x{ratio(a1, n, "train"):.2f})' for n in moved[:4])
    lines += [text + '.', '']
    if len(both) >= 2:
        orders = {a: sorted(both, key=lambda n: rank[a][n]) for a in amps}
        same = orders[a0] == orders[a1]
        lines += [f'mAP order of the {len(both)} candidates run in both precisions: '
                  + (f'the same ({" > ".join(orders[a0])}).' if same else
                     f'{a0}: {" > ".join(orders[a0])}; {a1}: {" > ".join(orders[a1])}.')
                  + ' Differences within the seed noise above are not a ranking.', '']
    else:
        lines += ['Fewer than two candidates have runs in both precisions: no mAP ranking '
                  f'to compare yet (the same command with `--amp {a1}` trains them).', '']
    return lines


def precision_compare(study: 'Study') -> dict:
    """:func:`precision_section`'s input for ``study`` and the same study in the other
    precision (read from the same results directory; nothing is measured or run)."""
    other = 'bf16' if study.s.amp == 'fp32' else 'fp32'
    twin = Study(dataclasses.replace(study.s, amp=other), log=lambda msg: None,
                 check_cpu=False)
    twin._data_sha = study.data_sha  # same data: hash it once
    studies = {study.s.amp: study, other: twin}
    return dict(amps=(study.s.amp, other), budget_s=study.s.budget_s,
                plans={a: s.plan(measure=False) for a, s in studies.items()},
                rows={a: aggregate(s.current_records()) for a, s in studies.items()})


def _seeds_bullet(rows: List[dict]) -> str:
    counts = sorted({len(r['seeds']) for r in rows}) or [1]
    if counts[0] >= 2:
        text = (f'{counts[0]} seeds per candidate' if len(counts) == 1 else
                f'{counts[0]}-{counts[-1]} seeds per candidate')
    elif counts[-1] >= 2:
        text = 'One seed per candidate, a second only for the top ones'
    else:
        text = 'One seed per candidate'
    noise = ' (the seed noise above)' if counts[-1] >= 2 else ''
    return (f'- **Few seeds.** {text}: differences of a point or two of mAP are within '
            f'run-to-run noise{noise}.')


def report_markdown(rows: List[dict], records: List[dict], plot_rel: str,
                    stale: int = 0, command: Optional[str] = None,
                    results_dir: str = RESULTS_DIR, compare: Optional[dict] = None) -> str:
    results_dir = results_dir.replace(os.sep, '/').rstrip('/')
    records = sorted(records, key=_record_order)
    first = records[0] if records else {}
    budget = first.get('budget_s')
    lat_front = {rows[i]['candidate'] for i in pareto_front(
        [(r['infer_ms'], r['bbox_mAP']) for r in rows])}
    train_front = {rows[i]['candidate'] for i in pareto_front(
        [(r['train_ms'], r['bbox_mAP']) for r in rows])}
    lines = [
        '# Equal-time backbone study',
        '',
        '<!-- Generated by tools/analysis/backbone_study.py --report from '
        f'{results_dir}/; do not edit by hand. -->',
        '',
        'Which backbone gives the best detector for a fixed training-time budget? The detector '
        'is the quickstart\'s, from the study\'s base config '
        '(`configs/quickstart/atss_vovnet-19-slim-dw-ese_fpn_demo.py`: '
        'ATSS + mmdet FPN and head, synthetic demo data, batch 8 at 192 px, AdamW lr 2e-3, '
        'weight decay 0.05, linear warm-up over the first 1/12 of the run then cosine to 2e-5, '
        'random horizontal flip); only the backbone changes, every one from scratch (nothing '
        'frozen, BN statistics trained, no pretrained weights), with this one lr and '
        'augmentation setting for all.',
        '',
    ]
    if not rows:
        lines += ['No records for these settings yet: run the study (commands below), then '
                  '`--report`.', '']
        if stale:
            lines += [f'{stale} record(s) in the results directory belong to other settings '
                      '(budget, config or seeds) and are not used.', '']
    else:
        lines += [
            f'Every run had the same training budget of **{budget:g} s** of '
            f'`{REFERENCE}`-equivalent time: the R18 detector trains N_R18 = '
            f'{first["ref_iters"]} iterations (budget / its measured step time, '
            f'{first["ref_train_ms"]:.1f} ms with {first["threads"]} threads), a candidate '
            'round(N_R18 / r) iterations, where r is its train-step time over R18\'s, measured '
            'paired in one process (alternating, same batch and threads). Machine noise thus '
            'changes no iteration count within a study.' + _noise_floor(first)
            + _execution(records) + _precision(records) + _machines(records),
            '',
            '| candidate | family | params (M) backbone / detector | GFLOPs | train ms/iter '
            '(x R18) | iterations | mAP | mAP50 | mAP75 | infer ms (x R18) | seeds | Pareto |',
            '|:--|:--|--:|--:|--:|--:|--:|--:|--:|--:|:--|:--|']
        for r in sorted(rows, key=lambda r: (-r['bbox_mAP'], r['candidate'])):
            name = f'**{r["candidate"]}**' if r['baseline'] else r['candidate']
            if r['levels'] != 'P2-P5':
                name += ' (P3-P6)'
            marks = [m for m, front in (('latency', lat_front), ('train', train_front))
                     if r['candidate'] in front]
            lines.append(
                f'| {name} | {r["family"]} | {r["backbone_params"] / 1e6:.2f} / '
                f'{r["params"] / 1e6:.2f} | {r["flops"] / 1e9:.2f} | {r["train_ms"]:.1f} '
                f'(x{r["train_ratio"]:.2f}) | {r["iters"]} | {_fmt_map(r)} | '
                f'{r["bbox_mAP_50"]:.3f} | {r["bbox_mAP_75"]:.3f} | {r["infer_ms"]:.1f} '
                f'(x{r["infer_ratio"]:.2f}) | {",".join(map(str, r["seeds"]))} | '
                f'{", ".join(marks) or "-"} |')
        lines += [
            '',
            'Rows by mAP (mean over seeds; per-seed values in brackets). **Bold**: mmdet\'s own '
            'ResNet baselines. GFLOPs: the whole detector (backbone, FPN, head; no '
            'post-processing) on one 192 x 192 image, one multiply-add = 1 FLOP '
            '(`tools/analysis/get_flops.py`). train ms/iter: the ratio measured paired against '
            'R18 times R18\'s step time. infer ms: one 192 x 192 image, eval mode, network '
            'only (backbone + FPN + head, no NMS), paired against R18; mmbackbones backbones '
            'run with their BN folded in eval mode (`fuse_bn_eval`), mmdet\'s ResNet does not. '
            'Pareto: on the front of mAP vs inference latency and/or vs train ms/iter.',
            '',
            f'![mAP vs inference latency and vs train time per iteration]({plot_rel})',
            '',
        ]
        noise = seed_noise(rows)
        if noise:
            lines += [f'Seed noise: over the {noise["count"]} candidate(s) trained with two or '
                      f'more seeds, the seeds\' mAP differ by {noise["mean"]:.3f} on average and '
                      f'{noise["max"]:.3f} at most. A smaller mAP difference between two rows is '
                      'not a ranking.', '']
        p36 = [r['candidate'] for r in rows if r['levels'] != 'P2-P5']
        if p36:
            lines += [f'{", ".join(p36)}: no stride-4 feature map, so its detector uses strides '
                      '8/16/32 and the FPN\'s extra conv adds P6 (head anchors at 8/16/32/64) '
                      'instead of P2-P5: a cheaper head that also sees small objects at a '
                      'coarser stride. Its row is not a pure backbone comparison.', '']
        lines += ['## Runs', '', '| candidate | seed | iterations | mAP | mAP50 | mAP75 | '
                  'train wall s | config hash |', '|:--|--:|--:|--:|--:|--:|--:|:--|']
        for rec in records:
            lines.append(f'| {rec["candidate"]} | {rec["seed"]} | {rec["iters"]} | '
                         f'{rec["bbox_mAP"]:.3f} | {rec["bbox_mAP_50"]:.3f} | '
                         f'{rec["bbox_mAP_75"]:.3f} | {rec["train_wall_s"]:.0f} | '
                         f'`{rec["config_hash"]}` |')
        lines += ['', 'train wall s: the run\'s own clock, which counts the time it waited for '
                  'other runs on the machine; the budget is its iteration count, not this.', '']
        if stale:
            lines += [f'{stale} other record(s) in the results directory (another budget, '
                      'config or seed set) are not part of this report.', '']
    if compare:
        lines += precision_section(compare)
    command = command or first.get('command') or ('python tools/analysis/backbone_study.py --budget-s 150 '
                                       '--seeds 0 --top-k-second-seed 3 --threads 2')
    lines += ['## Candidates', '', '| candidate | backbone config (plus frozen_stages=-1, '
              'norm_eval=False, init_cfg=None) | levels | note |', '|:--|:--|:--|:--|']
    for cand in CANDIDATES:
        args = ', '.join(f'{k}={v!r}' for k, v in cand.backbone.items())
        note = cand.note
        if cand.act_learn_ramp:
            note += ('; ' if note else '') + (
                f'VanillaNetActLearnHook ramps act_learn 0 -> 1 over the first '
                f'{cand.act_learn_ramp:.2g} of the run, as in its demo config')
        lines.append(f'| {cand.name} | `dict({args})` | {cand.levels} | {note or "-"} |')
    lines += [
        '',
        '## Commands',
        '',
        '```bash',
        'python tools/dataset/make_demo_data.py --out data/demo --num-train 800 --num-val 150 '
        '--size 192 192 --seed 0   # or let the study generate it',
        f'{command} --dry-run   # phase-1 timings and the plan: iterations per run, total time',
        command,
        f'{command} --report-only   # regenerate this page and the plot from the records',
        '```',
        '',
        f'Each finished run is one JSON record in `{results_dir}/` named by '
        'candidate, seed, budget and config hash. Started again, the study trains only what is '
        'missing; a record of another budget or config (hash of the whole config, the data '
        'annotations and the thread count) or another iteration count is never reused: those '
        f'runs train anew. Phase-1 timings are kept in `{results_dir}/timing/` under the same '
        'rule. '
        'Run phase 1 on a quiet machine: the paired ratios survive background load, but the '
        'R18 step time, measured once, sets every iteration count.',
        '',
        '## What this study does not show',
        '',
        '- **Synthetic data.** Six shape classes on clutter, 800 training images: no texture, '
        'no natural-image statistics. Rankings on COCO can differ.',
        '- **From scratch, short schedules.** No pretrained weights, a few hundred iterations: '
        'it measures how fast a backbone learns from nothing in a small budget, not the '
        'accuracy it reaches with ImageNet weights or long training.',
        '- **CPU, and which CPU.** Budgets and latencies are CPU timings (the precision and '
        'thread count of the command) on the CPU the records name. Another CPU changes the cost '
        'ratios, and so the iteration counts and possibly the ranking: on two 2-core machines '
        'the VoVNet-19-slim-eSE step measured x0.74 of R18\'s with AVX2 kernels and x0.96 with '
        'AVX-512 ones, and under bf16 autocast (AMX) x0.89. bf16 pays only with AMX: on a Xeon '
        'without it, bf16 autocast made detector train steps 1.14-1.31x slower than float32. '
        'On a GPU depthwise convs and memory-bound blocks fare differently again.',
        '- **One lr / augmentation setting.** The quickstart\'s AdamW 2e-3 and flip for every '
        'backbone; some would do better with their own recipe.',
        _seeds_bullet(rows),
        '- **Inference latency is network-only, batch 1, 192 px, this machine.** No NMS, no '
        'export; other sizes or runtimes change it.',
        '',
    ]
    return '\n'.join(lines)


def write_report(records: List[dict], md_path: str, plot_path: str, stale: int = 0,
                 command: Optional[str] = None,
                 results_dir: str = RESULTS_DIR, compare: Optional[dict] = None) -> None:
    """Write the markdown page and (when there are records) the plot, both deterministic.
    ``command``: the study's command line for the page (default: the first record's);
    ``results_dir``: where the page says the records are; ``compare``: see
    :func:`precision_section`."""
    rows = aggregate(records)
    plot_rel = osp.relpath(plot_path, osp.dirname(osp.abspath(md_path)) or '.')
    text = report_markdown(rows, records, plot_rel.replace(os.sep, '/'), stale,
                           command, results_dir, compare).encode()
    atomic_write(md_path, lambda f: f.write(text))
    if rows:
        write_plot(rows, plot_path)


def job_main(argv: Sequence[str]) -> int:
    """One training run of a study with ``jobs > 1`` (what :meth:`Study._run_in_jobs` starts):
    ``argv`` is the job file; the record is written as in a sequential study."""
    import torch
    with open(argv[0]) as f:
        job = json.load(f)
    settings = StudySettings.from_spec(job['settings'])
    torch.set_num_threads(settings.train_threads)
    study = Study(settings, log=lambda msg: print(msg, flush=True))
    plan = study.plan(measure=False)
    cand, seed, iters = candidate(job['candidate']), job['seed'], job['iters']
    if plan is None or plan['iters'][cand.name] != iters:
        raise RuntimeError(f'{argv[0]}: the phase-1 timings in {settings.results_dir} no longer '
                           f'plan {iters} iterations for {cand.name}; run the study again.')
    rec = study.execute(cand, seed, iters, plan)
    print(f'[study job] {cand.name} seed {seed}: mAP {rec["bbox_mAP"]:.3f} '
          f'({rec["train_wall_s"]:.0f} s)', flush=True)
    return 0


_JOB_COMMAND = ('import sys; from mmbackbones.analysis.backbone_study import job_main; '
                'sys.exit(job_main(sys.argv[1:]))')
