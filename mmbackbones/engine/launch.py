# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Logic shared by ``tools/train.py`` and ``tools/test.py``.

The tools follow MMDetection 3.3's command line; this module holds everything they have in common
(config loading and overrides, work-dir rules, CPU distributed setup, runner construction) plus the
per-tool config edits, so the scripts stay thin and the behaviour can be tested in-process.

CPU distributed training. MMEngine's ``init_dist`` always calls ``torch.cuda.set_device`` and
``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to DistributedDataParallel, both of which
fail without CUDA, and MMDetection's ``default_runtime`` asks for the NCCL backend. When no CUDA
device is present and the launcher is ``pytorch`` (torchrun), :func:`setup_distributed` initialises
the default process group itself with the gloo backend before the runner is built (MMEngine then
skips its own ``init_dist``) and sets ``model_wrapper_cfg`` so DDP gets ``device_ids=None``. With
CUDA present nothing is changed and MMEngine's normal path runs.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import logging
import os
import os.path as osp
from typing import Any, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import print_log

from .checkpoint import (ATOMIC_BACKEND_NAME, CorruptCheckpointError, check_checkpoint_file,
                         find_latest_valid_checkpoint)

__all__ = [
    'UsageError', 'add_common_args', 'load_config', 'check_neck_in_channels', 'setup_distributed',
    'teardown_distributed', 'build_runner', 'run', 'apply_resume', 'enable_amp',
    'enable_test_amp',
    'enable_auto_scale_lr', 'enable_atomic_checkpoint_writes', 'enable_rng_state_checkpoints',
    'check_checkpoint_arg',
    'enable_visualization', 'add_dump_results', 'enable_tta', 'LAUNCHERS',
]

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


class UsageError(ValueError):
    """A command-line argument or config value the tools cannot work with; the message says why."""


# --------------------------------------------------------------------------- arguments


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--work-dir``, ``--cfg-options``, ``--launcher`` and ``--local-rank`` to ``parser``."""
    parser.add_argument('--work-dir', help='directory for logs and checkpoints (default: '
                        "the config's work_dir, else ./work_dirs/<config name>)")
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, as key=value pairs (nested keys with dots); lists as '
        'key="[a,b]" or key=a,b; quotes are needed around nested lists/tuples and no white space '
        'is allowed, e.g. train_dataloader.batch_size=4 model.backbone.depth=18')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='job launcher; use tools/dist_train.sh (torchrun) for "pytorch"')
    # torch.distributed.launch passes --local-rank (newer) or --local_rank (older); torchrun sets
    # the LOCAL_RANK environment variable instead.
    parser.add_argument('--local-rank', '--local_rank', dest='local_rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    return parser


def export_local_rank(args: argparse.Namespace) -> None:
    """Make ``LOCAL_RANK`` available to MMEngine when a launcher passed it as an argument."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)


def load_config(args: argparse.Namespace) -> Config:
    """Read ``args.config``, apply ``--cfg-options`` and ``--launcher``, and settle ``work_dir``.

    ``work_dir`` priority (as in MMDetection): ``--work-dir`` > the config's ``work_dir`` >
    ``./work_dirs/<config file name without extension>``.
    """
    from mmbackbones.config_scope import resolve_config_path
    try:
        args.config = resolve_config_path(args.config)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not osp.isfile(args.config):
        raise UsageError(f"config: '{args.config}' is not a file; pass the path of a config "
                         'file, e.g. configs/<model>/<name>.py or mmbackbones::<model>/<name>.py')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if getattr(args, 'cfg_options', None):
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    check_neck_in_channels(cfg)
    return cfg


def check_neck_in_channels(cfg: Config) -> None:
    """Fail before anything is built when ``model.neck.in_channels`` disagrees with the backbone.

    The backbone's output channels come from :func:`~mmbackbones.models.get_feature_info` (built
    on the ``meta`` device: no weights, no time). Only a list-valued ``in_channels`` of the
    (first) neck is compared; a backbone that cannot be built here is left to the model build,
    which reports its own error.
    """
    model = cfg.get('model') or {}
    backbone, neck = model.get('backbone'), model.get('neck')
    if not backbone or not neck:
        return
    neck = neck[0] if isinstance(neck, (list, tuple)) else neck
    in_channels = neck.get('in_channels') if isinstance(neck, dict) else None
    if not isinstance(in_channels, (list, tuple)):
        return
    from mmbackbones.models import get_feature_info
    try:
        info = get_feature_info(backbone)
    except Exception:  # noqa: BLE001 - the real build raises the real error
        return
    if list(in_channels) != list(info.channels):
        name = backbone.get('type')
        arch = backbone.get('arch', backbone.get('depth'))
        raise UsageError(
            f'model.neck.in_channels={list(in_channels)} disagrees with the backbone: {name}'
            f'{f" (arch {arch!r})" if arch is not None else ""} returns feature maps with channels '
            f'{list(info.channels)} (strides {list(info.strides)}) for out_indices='
            f'{backbone.get("out_indices", "default")}. Set model.neck.in_channels='
            f'{list(info.channels)}, or change the backbone\'s out_indices.')


# --------------------------------------------------------------------------- distributed


def setup_distributed(cfg: Config) -> bool:
    """Initialise CPU (gloo) distributed training when CUDA is absent; see the module docstring.

    Returns True when this function created the process group (call
    :func:`teardown_distributed` at the end), False when there is nothing to do (``--launcher
    none``, CUDA present, or a group already exists).
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher != 'pytorch':
        raise UsageError(
            f"--launcher {launcher}: distributed runs without CUDA are supported with --launcher "
            'pytorch only (tools/dist_train.sh, i.e. torchrun). Under Slurm, run '
            "'srun ... torchrun ... tools/train.py CONFIG --launcher pytorch'.")
    if torch_dist.is_initialized():
        return False
    missing = [v for v in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
               if v not in os.environ]
    if missing:
        raise UsageError(
            f'--launcher pytorch: the environment variable(s) {", ".join(missing)} are not set; '
            'they are set by torchrun. Start the job with tools/dist_train.sh CONFIG NPROC or '
            "'torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch'.")

    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
    requested = dist_cfg.get('backend', 'nccl')
    dist_cfg['backend'] = 'gloo'  # recorded in the dumped config and the runtime log
    kwargs = {}
    if dist_cfg.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    torch_dist.init_process_group(backend='gloo', init_method='env://', **kwargs)
    # MMEngine's console logger is silent below ERROR on ranks > 0; one plain line per worker
    # shows that every rank joined (and, from teardown_distributed, that every rank finished).
    print(f'[mmbackbones] rank {torch_dist.get_rank()}/{torch_dist.get_world_size()}: no CUDA '
          f'device, joined the process group with the gloo backend (config asked for '
          f'{requested!r}).', flush=True)

    from mmengine.registry import MODEL_WRAPPERS
    from torch.nn.parallel import DistributedDataParallel
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    else:
        wrapper_type = wrapper.get('type', 'MMDistributedDataParallel')
        wrapper_cls = MODEL_WRAPPERS.get(wrapper_type) if isinstance(wrapper_type, str) \
            else wrapper_type
        if isinstance(wrapper_cls, type) and issubclass(wrapper_cls, DistributedDataParallel):
            wrapper.setdefault('device_ids', None)  # CPU modules take no device_ids
    return True


def teardown_distributed(created: bool, finished: bool = False) -> None:
    """Destroy the process group made by :func:`setup_distributed` (no-op if it made none).

    ``finished=True`` (the tool's work completed) prints a per-rank completion line first.
    """
    if created and torch_dist.is_initialized():
        if finished:
            print(f'[mmbackbones] rank {torch_dist.get_rank()}/{torch_dist.get_world_size()}: '
                  'finished.', flush=True)
            # Every rank leaves together: a rank that destroyed its gloo group while a peer
            # still had work in flight was seen to abort at exit ('terminate called without an
            # active exception', exit -6) after a complete run. Not after a failure: a peer
            # that died would leave the barrier waiting until torchrun stops the group.
            torch_dist.barrier()
        torch_dist.destroy_process_group()


def run(cfg: Config, created_group: bool, action: str) -> None:
    """Build the runner and call ``runner.<action>()`` ('train' or 'test'), then tear down the
    process group :func:`setup_distributed` made, reporting completion per rank."""
    finished = False
    try:
        getattr(build_runner(cfg), action)()
        finished = True
    finally:
        teardown_distributed(created_group, finished)


def build_runner(cfg: Config) -> Any:
    """Build the runner: ``runner_type`` from MMDetection's registry if set, else MMEngine's."""
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        from mmdet.registry import RUNNERS
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


# --------------------------------------------------------------------------- train-only edits


def _is_remote(path: str) -> bool:
    return '://' in path or path.startswith(('s3:', 'petrel:', 'pavi:'))


def apply_resume(cfg: Config, resume: Optional[str]) -> Optional[str]:
    """Apply ``--resume [PATH]`` to ``cfg``; returns the checkpoint to resume from, if any.

    ``'auto'`` (``--resume`` without a path), or ``resume=True`` in the config without
    ``load_from``, picks :func:`find_latest_valid_checkpoint` in the work dir instead of MMEngine's
    unvalidated ``last_checkpoint`` lookup; with none found the run starts fresh. An explicit path
    must exist and, if local, be a complete checkpoint.
    """
    if resume is None:
        if cfg.get('resume', False) is not True:
            return None
        # The config itself asks to resume: from its load_from, or (None) MMEngine's auto-resume,
        # which we replace by the validated search.
        resume = cfg.get('load_from') or 'auto'
    if resume == 'auto':
        found = find_latest_valid_checkpoint(cfg.work_dir)
        if found is None:
            print_log(f"--resume auto: no valid checkpoint in '{cfg.work_dir}'; starting training "
                      'from scratch.', logger='current')
            cfg.resume = False
            return None
        print_log(f"--resume auto: resuming from '{found}'.", logger='current')
        cfg.resume = True
        cfg.load_from = found
        return found
    if not _is_remote(resume):
        if not osp.isfile(resume):
            raise UsageError(f"--resume: checkpoint '{resume}' does not exist. Pass an existing "
                             'checkpoint file, or --resume without a path to pick the newest '
                             'valid one in the work dir.')
        try:
            check_checkpoint_file(resume)
        except CorruptCheckpointError as exc:
            raise UsageError(f'--resume: {exc.args[0]}') from exc
    cfg.resume = True
    cfg.load_from = resume
    return resume


def enable_amp(cfg: Config) -> None:
    """``--amp``: mixed-precision training, and validation under autocast.

    On a GPU (or NPU, MLU, MUSA) ``optim_wrapper`` becomes MMEngine's ``AmpOptimWrapper`` (fp16
    with a dynamic loss scale); on the CPU it becomes
    :class:`~mmbackbones.engine.amp.CPUBF16AmpOptimWrapper` (bf16 autocast, float32 weights, no
    loss scale), refused with a clear error on a CPU without bf16 kernels. Either way the
    validation loop runs under autocast too: on the CPU as ``CPUBF16ValLoop`` (bf16 network,
    float32 post-processing), on a GPU with ``val_cfg.fp16=True`` (MMEngine's fp16 autocast).
    """
    from mmengine.device import get_device
    on_cpu = get_device() == 'cpu'
    amp_type = 'CPUBF16AmpOptimWrapper' if on_cpu else 'AmpOptimWrapper'
    wrapper = cfg.get('optim_wrapper')
    wrapper_type = wrapper.get('type', 'OptimWrapper') if wrapper is not None else None
    if wrapper_type in ('AmpOptimWrapper', 'CPUBF16AmpOptimWrapper'):
        if wrapper_type != amp_type:
            where = 'the CPU' if on_cpu else 'a GPU'
            raise UsageError(f'--amp: the config has optim_wrapper.type={wrapper_type!r}, which '
                             f'does not run on {where}; use {amp_type!r} there (or drop --amp '
                             'and set optim_wrapper.type yourself).')
        print_log('--amp: AMP is already enabled in the config.', logger='current',
                  level=logging.WARNING)
    elif wrapper_type != 'OptimWrapper':
        raise UsageError(f'--amp works with optim_wrapper.type="OptimWrapper" only, but the config '
                         f'has {wrapper_type!r}; set the AMP wrapper in the config instead.')
    if on_cpu:
        _check_cpu_bf16('--amp')
    if wrapper_type == 'OptimWrapper':
        wrapper.type = amp_type
        if not on_cpu:
            wrapper.loss_scale = 'dynamic'
    if cfg.get('val_cfg'):
        _enable_loop_autocast(cfg, 'val_cfg', 'ValLoop', '--amp', required=False)


def enable_test_amp(cfg: Config) -> None:
    """``tools/test.py --amp``: run the test loop under autocast: ``CPUBF16TestLoop`` on the CPU
    (refused on a CPU without bf16 kernels), ``test_cfg.fp16=True`` (fp16) on a GPU."""
    from mmengine.device import get_device
    if get_device() == 'cpu':
        _check_cpu_bf16('--amp')
    _enable_loop_autocast(cfg, 'test_cfg', 'TestLoop', '--amp', required=True)


def _check_cpu_bf16(what: str) -> None:
    from .amp import CPUBF16UnsupportedError, check_cpu_bf16
    try:
        check_cpu_bf16(what)
    except CPUBF16UnsupportedError as exc:
        raise UsageError(str(exc)) from exc


def _enable_loop_autocast(cfg: Config, key: str, loop: str, what: str, required: bool) -> None:
    """Run MMEngine's ``ValLoop`` / ``TestLoop`` (config ``cfg[key]``) under autocast: on the CPU
    by switching it to mmbackbones' ``CPUBF16<loop>`` (bf16 network, float32 post-processing),
    on a GPU with the loop's ``fp16=True`` (MMEngine's autocast: fp16). Another loop type is an
    error when ``required``, else a warning (that loop then runs in float32)."""
    from mmengine.device import get_device
    loop_cfg = cfg.get(key)
    if loop_cfg is None:
        loop_cfg = cfg[key] = ConfigDict()
    cpu_loop = f'CPUBF16{loop}'
    loop_type = loop_cfg.get('type', loop)
    on_cpu = get_device() == 'cpu'
    if loop_type == cpu_loop:
        if not on_cpu:
            raise UsageError(f'{what}: {key}.type={cpu_loop!r} autocasts CPU operations only, but '
                             f"this run is on '{get_device()}'; use {key}=dict(type={loop!r}) "
                             '(--amp then sets its fp16=True).')
        return
    if loop_type not in (loop, f'mmengine.{loop}'):
        message = (f'{what}: {key}.type={loop_type!r} is not MMEngine\'s {loop}, which is what '
                   f'{what} knows how to run under autocast')
        if required:
            raise UsageError(f'{message}; use {key}=dict(type={loop!r}) or drop {what}.')
        print_log(f'{message}; that loop runs in float32.', logger='current',
                  level=logging.WARNING)
        return
    if on_cpu:
        loop_cfg.type = cpu_loop
        loop_cfg.pop('fp16', None)
    else:
        loop_cfg.fp16 = True


def enable_auto_scale_lr(cfg: Config) -> None:
    """``--auto-scale-lr``: turn on ``auto_scale_lr`` (needs ``enable`` and ``base_batch_size``)."""
    scale = cfg.get('auto_scale_lr')
    if not scale or 'enable' not in scale or 'base_batch_size' not in scale:
        raise UsageError('--auto-scale-lr: the config needs '
                         'auto_scale_lr = dict(enable=False, base_batch_size=<total batch size the '
                         'learning rate was tuned for>); it has '
                         f'{None if scale is None else dict(scale)!r}.')
    scale.enable = True


def enable_atomic_checkpoint_writes(cfg: Config) -> bool:
    """Let the checkpoint hook write through :class:`~.checkpoint.AtomicLocalBackend`.

    Only when the config uses MMEngine's ``CheckpointHook`` with no ``backend_args`` /
    ``file_client_args`` of its own and a local destination; anything else is left as configured.
    Returns True when the backend was selected.
    """
    from mmengine.hooks import CheckpointHook
    hooks = cfg.get('default_hooks') or {}
    hook = hooks.get('checkpoint')
    if not hook or hook.get('type') not in ('CheckpointHook', 'mmengine.CheckpointHook',
                                            CheckpointHook):
        return False
    if hook.get('backend_args') is not None or hook.get('file_client_args') is not None:
        return False
    out_dir = hook.get('out_dir') or cfg.work_dir
    if _is_remote(str(out_dir)):
        return False
    hook.backend_args = dict(backend=ATOMIC_BACKEND_NAME)
    return True


def enable_rng_state_checkpoints(cfg: Config) -> bool:
    """Add :class:`~.hooks.RNGStateHook` to ``custom_hooks`` unless the config has it already,
    so every checkpoint holds the generators' state and a resumed run draws the same random
    numbers (denoising noise, drop-path, dropout) as an uninterrupted one. Returns True when
    added."""
    from .hooks import RNGStateHook
    hooks = list(cfg.get('custom_hooks') or [])
    if any(isinstance(h, RNGStateHook) or (isinstance(h, dict) and h.get('type') in (
            'RNGStateHook', 'mmbackbones.RNGStateHook', RNGStateHook)) for h in hooks):
        return False
    hooks.append(dict(type='RNGStateHook'))
    cfg.custom_hooks = hooks
    return True


# --------------------------------------------------------------------------- test-only edits


def check_checkpoint_arg(checkpoint: str) -> None:
    """Fail early, naming the argument, when a local ``checkpoint`` is missing or truncated."""
    if _is_remote(checkpoint):
        return
    if not osp.isfile(checkpoint):
        raise UsageError(f"checkpoint: '{checkpoint}' does not exist; pass the .pth file to "
                         'evaluate.')
    try:
        check_checkpoint_file(checkpoint)
    except CorruptCheckpointError as exc:
        raise UsageError(f'checkpoint: {exc.args[0]}') from exc


def enable_visualization(cfg: Config, show: bool, show_dir: Optional[str],
                         wait_time: float) -> None:
    """``--show`` / ``--show-dir``: turn on drawing in the ``visualization`` default hook."""
    hooks = cfg.get('default_hooks') or {}
    if not hooks.get('visualization'):  # absent, or None (MMEngine's way to disable a hook)
        raise UsageError('--show/--show-dir need default_hooks.visualization '
                         "(e.g. dict(type='DetVisualizationHook')) in the config; it has none.")
    hook = hooks['visualization']
    hook['draw'] = True
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        # DetVisualizationHook saves under <work_dir>/<timestamp>/<test_out_dir>.
        hook['test_out_dir'] = show_dir


def add_dump_results(cfg: Config, out: str) -> None:
    """``--out``: add MMDetection's ``DumpDetResults`` metric so predictions go to ``out``."""
    if not out.endswith(('.pkl', '.pickle')):
        raise UsageError(f"--out: '{out}' must end with .pkl or .pickle (predictions are dumped "
                         'as a pickle file).')
    dump = ConfigDict(type='DumpDetResults', out_file_path=out)
    evaluator = cfg.get('test_evaluator')
    if evaluator is None:
        cfg.test_evaluator = [dump]
    elif isinstance(evaluator, (list, tuple)):
        cfg.test_evaluator = [*evaluator, dump]
    else:
        cfg.test_evaluator = [evaluator, dump]


def enable_tta(cfg: Config) -> None:
    """``--tta``: wrap the model in its TTA model and use the TTA pipeline for testing.

    Configs without ``tta_model`` / ``tta_pipeline`` get horizontal-flip TTA with NMS merging, built
    from the test pipeline (its last step, the packing transform, moves inside ``TestTimeAug``).
    """
    if 'tta_model' not in cfg:
        print_log('--tta: the config has no tta_model; using DetTTAModel with NMS (IoU 0.5, 100 '
                  'boxes per image).', logger='current', level=logging.WARNING)
        cfg.tta_model = dict(type='DetTTAModel', tta_cfg=dict(
            nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # dataset wrappers: the pipeline lives on the inner dataset
        dataset = dataset['dataset']
    if 'tta_pipeline' not in cfg:
        print_log('--tta: the config has no tta_pipeline; using flip TTA on the test pipeline.',
                  logger='current', level=logging.WARNING)
        pipeline = copy.deepcopy(list(dataset.pipeline))
        if not pipeline or 'Pack' not in str(pipeline[-1].get('type', '')):
            raise UsageError('--tta: cannot derive a TTA pipeline because the test pipeline does '
                             'not end with a packing transform (e.g. PackDetInputs); add '
                             'tta_pipeline to the config.')
        pack = dict(pipeline[-1])
        pack['meta_keys'] = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                             'flip', 'flip_direction')
        pipeline[-1] = dict(type='TestTimeAug', transforms=[
            [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
            [pack],
        ])
        cfg.tta_pipeline = pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    dataset.pipeline = cfg.tta_pipeline
