"""Any timm model with ``features_only`` support, as an mmdet backbone with our conventions.

timm builds the feature extractor (``timm.create_model(..., features_only=True)``) and runs it;
this module adds what mmdet users expect from a backbone: ``out_channels`` / ``out_strides``
read from timm's ``feature_info``, ``frozen_stages`` and ``norm_eval`` through
:class:`BaseBackbone`, ``with_cp`` through timm's grad checkpointing, and ``init_cfg`` loading
of plain timm checkpoints that reports what matched. timm itself never downloads here: named
timm weights come through ``init_cfg=dict(type='Pretrained',
checkpoint='mmbackbones://timm/<model>.<tag>')`` (the checked weights cache).

timm's stages are groups of timm's own modules (:class:`TimmStage`), so the weights keep timm's
module tree and a timm checkpoint loads without conversion. Stage 0 is the stride-4 level, as in
every other backbone: timm's feature levels finer than stride 4 belong to the stem.
"""
import difflib
import os
import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from mmdet.registry import MODELS
from torch import nn

from .base import BaseBackbone, check_in_channels

# Stage 0 is the first timm feature level at this stride or coarser; finer levels (a resnet's
# act1, an efficientnet's blocks.0, a regnet's stem, all at stride 2) belong to the stem.
STAGE0_STRIDE = 4
# mmcv layer configs have no meaning for timm's layers; timm would ignore some of them silently.
MMCV_ONLY_ARGS = ('norm_cfg', 'conv_cfg', 'act_cfg', 'dcn', 'stage_with_dcn', 'style')
# How a key of a plain timm checkpoint is named inside each of timm's feature wrappers, tried in
# order: a native features class (EfficientNetFeatures) keeps the names, FeatureListNet flattens
# the first level of Sequentials (stages.0 -> stages_0), FeatureGetterNet and a no-rewrite
# FeatureHookNet hold the whole model as `model` / `body`.
TIMM_KEY_RENAMES = (
    lambda key: key,
    lambda key: key.replace('.', '_', 1),
    lambda key: 'model.' + key,
    lambda key: 'body.' + key,
)


class TimmStage:
    """The modules and loose tensors of a timm model that compute one stage (or the stem).

    A view used for freezing and inspection, with the parts of the ``nn.Module`` interface that
    :class:`BaseBackbone` uses (``parameters``, ``eval``, ``train``, ``training``, ...). It owns
    nothing: the tensors stay registered in the timm model, so state-dict keys, ``.to()`` and
    module swaps (SyncBN conversion) are timm's own; members are looked up by name on each call.

    Args:
        root (nn.Module): The backbone the names are relative to.
        module_names (list[str]): Submodules that belong to the stage.
        tensor_names (list[str]): Parameters / buffers held directly by a container that also
            holds other stages (a ViT's ``cls_token`` and ``pos_embed`` belong to the stem).
    """

    def __init__(self, root: nn.Module, module_names: List[str], tensor_names: List[str]) -> None:
        self.root = root
        self.module_names = list(module_names)
        self.tensor_names = list(tensor_names)
        self._training = True

    def __repr__(self) -> str:
        return f'TimmStage(modules={self.module_names}, tensors={self.tensor_names})'

    def named_modules(self) -> Iterator[Tuple[str, nn.Module]]:
        for name in self.module_names:
            yield name, self.root.get_submodule(name)

    def modules(self) -> Iterator[nn.Module]:
        for _, module in self.named_modules():
            yield from module.modules()

    def _loose_tensors(self) -> Iterator[Tuple[str, torch.Tensor, bool]]:
        for name in self.tensor_names:
            owner_name, _, attr = name.rpartition('.')
            owner = self.root.get_submodule(owner_name)
            if attr in owner._parameters:
                yield name, owner._parameters[attr], True
            else:
                yield name, owner._buffers[attr], False

    def named_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        for name, module in self.named_modules():
            yield from module.named_parameters(prefix=name)
        for name, tensor, is_param in self._loose_tensors():
            if is_param:
                yield name, tensor

    def parameters(self) -> Iterator[nn.Parameter]:
        for _, param in self.named_parameters():
            yield param

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The stage's entries of the backbone's state dict, with the backbone's key names."""
        state: Dict[str, torch.Tensor] = {}
        for name, module in self.named_modules():
            state.update(module.state_dict(prefix=name + '.'))
        state.update({name: tensor for name, tensor, _ in self._loose_tensors()})
        return state

    def train(self, mode: bool = True) -> 'TimmStage':
        self._training = mode
        for _, module in self.named_modules():
            module.train(mode)
        return self

    def eval(self) -> 'TimmStage':
        return self.train(False)

    @property
    def training(self) -> bool:
        """True when every member module is in training mode (the last mode set, if none)."""
        members = [module for _, module in self.named_modules()]
        return all(m.training for m in members) if members else self._training


def _group_by_features(features: nn.Module, cuts: List[str]
                       ) -> List[Tuple[List[str], List[str]]]:
    """Split a timm features model into the stem and one group per feature, in module order.

    ``cuts[i]`` is the module whose output is feature ``i``. Stage ``i`` is that module plus the
    modules registered between it and the previous cut; the stem is what comes before the first
    cut. timm's feature wrappers assume the same thing: modules are registered in the order
    they run. A container holding a cut is split; its own tensors go with the group current at
    its start. Modules after the last cut (kept by some timm wrappers) go to the last stage.

    Returns:
        list: ``(module_names, tensor_names)`` for the stem, then for each stage.
    """
    groups: List[Tuple[List[str], List[str]]] = [([], []) for _ in range(len(cuts) + 1)]
    done = 0  # cuts passed so far

    def current(name: str) -> int:
        if done < len(cuts) and name == cuts[done]:
            return done + 1
        return min(done, len(cuts) - 1) + 1 if done else 0

    def walk(module: nn.Module, prefix: str) -> None:
        nonlocal done
        tensors = list(module._parameters) + [
            b for b in module._buffers if b not in module._non_persistent_buffers_set]
        for attr in tensors:
            if getattr(module, attr) is not None:
                groups[current(prefix + attr)][1].append(prefix + attr)
        for child_name, child in module.named_children():
            name = prefix + child_name
            if any(cut.startswith(name + '.') for cut in cuts[done:]):
                walk(child, name + '.')
                continue
            groups[current(name)][0].append(name)
            if done < len(cuts) and name == cuts[done]:
                done += 1

    walk(features, '')
    if done != len(cuts):
        raise RuntimeError(f'timm feature module {cuts[done]!r} was not found in the features '
                           f'model {type(features).__name__}.')
    return groups


@MODELS.register_module()
class TimmBackbone(BaseBackbone):
    """A timm model with ``features_only`` support, with mmdet's backbone conventions.

    timm's ``features_only`` model does the work; stages, channels and strides come from timm's
    ``feature_info``. So configs never guess FPN ``in_channels``:
    ``mmbackbones.get_feature_info(cfg.model.backbone)`` (or ``model.out_channels``) gives them.

    Stages count the way they do for every other backbone and for mmdet's ResNet: stage 0 is
    the stride-4 level. timm's feature levels finer than stride 4 (the stride-2 map of many
    CNNs: resnet ``act1``, regnet ``stem``, efficientnet ``blocks.0``) are part of the stem
    (``stem_levels`` of them), so for a timm resnet ``out_indices=(0, 1, 2, 3)`` are
    layer1-layer4 and ``frozen_stages=1`` freezes the stem and layer1, exactly as in mmdet's
    ResNet. A model whose first level is stride 4 or coarser (convnext, a ViT's blocks, a
    stride-8 start) folds nothing: stage 0 is its first level. Stage ``i`` is timm's feature
    ``i + stem_levels`` (``timm_out_indices``): the module that feature is taken from plus the
    modules between it and the previous feature; the stem is every module before stage 0.

    Args:
        model_name (str): A timm model name, e.g. ``'convnext_tiny'`` or ``'resnet50d'``
            (``timm.list_models()``); a pretrained tag (``'resnet50.a1_in1k'``) is allowed.
        out_indices (Sequence[int], optional): Stages to return, sorted and unique, in
            ``0..len(feature_info) - stem_levels - 1``. Default: timm's default features for
            the model, less those in the stem.
        num_stages (int, optional): Stages to build. Default: ``max(out_indices) + 1``, as timm
            does (later stages are not built).
        frozen_stages (int): -1 freezes nothing, 0 the stem (with the levels finer than stride
            4), k the stem and stages 1..k (``out_indices`` 0..k-1). Frozen parts are in eval
            mode with ``requires_grad=False``, so they record no autograd graph. Default: -1.
        norm_eval (bool): Keep every BatchNorm in eval mode during training. Default: True.
        with_cp (bool): timm's gradient checkpointing (``set_grad_checkpointing``); an error
            for a model that has none. Default: False.
        pretrained (bool | str): ``True`` loads timm's weights from the local file given as
            ``pretrained_cfg_overlay=dict(file=...)``, with timm's own loader and checks
            (``.safetensors`` works); without such a file it is an error, never a download.
            A str is the deprecated form of ``init_cfg`` Pretrained. Default: False.
        plugins (list[dict], optional): Not supported (an error), as timm builds the blocks.
        init_cfg (dict | list[dict], optional): ``dict(type='Pretrained', checkpoint=...)``
            loads a plain timm state dict (or one of this backbone): keys are mapped to timm's
            feature wrapper, the classification head is reported as unexpected and dropped, and
            loading fails below ``min_loaded_ratio`` (default 0.9) of the parameters.
        **timm_kwargs: Passed to ``timm.create_model`` (``drop_path_rate``, ``output_stride``,
            ``pretrained_cfg_overlay``, ...).

    The other arguments are :class:`BaseBackbone`'s, with these defaults: ``in_channels=3``
    (timm's ``in_chans``), ``norm_eval=True``, ``channels_last=False``. mmcv layer configs
    (``norm_cfg``, ``conv_cfg``, ``act_cfg``) do not apply: timm builds its own layers.

    Config example (RetinaNet; see configs/timm/ for complete files)::

        model = dict(
            backbone=dict(
                _delete_=True, type='TimmBackbone', model_name='convnext_tiny',
                out_indices=(1, 2, 3), frozen_stages=1, drop_path_rate=0.2,
                init_cfg=dict(type='Pretrained',
                              checkpoint='checkpoints/convnext_tiny.in12k_ft_in1k.pth')),
            neck=dict(in_channels=[192, 384, 768], start_level=0))

    The neck's ``in_channels`` equal ``get_feature_info(model.backbone).channels``. The local
    checkpoint is a timm state dict, e.g. saved once on a machine with network access:
    ``torch.save(timm.create_model('convnext_tiny.in12k_ft_in1k', pretrained=True).state_dict(),
    path)``.

    Example:
        >>> import torch
        >>> from mmbackbones.models import TimmBackbone
        >>> model = TimmBackbone('resnet18', out_indices=(0, 1, 2, 3), frozen_stages=1).eval()
        >>> model.out_channels, model.out_strides, model.stem_levels, model.timm_out_indices
        ((64, 128, 256, 512), (4, 8, 16, 32), 1, (1, 2, 3, 4))
        >>> for out in model(torch.rand(1, 3, 64, 64)):
        ...     print(tuple(out.shape))
        (1, 64, 16, 16)
        (1, 128, 8, 8)
        (1, 256, 4, 4)
        (1, 512, 2, 2)
    """

    def __init__(self, model_name: str, out_indices: Optional[Sequence[int]] = None,
                 num_stages: Optional[int] = None, frozen_stages: int = -1,
                 norm_eval: bool = True, with_cp: bool = False, channels_last: bool = False,
                 in_channels: int = 3, pretrained: Union[bool, str] = False,
                 plugins: Optional[List[dict]] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None, **timm_kwargs) -> None:
        timm_kwargs = self._check_timm_kwargs(model_name, timm_kwargs)
        if isinstance(pretrained, str) and pretrained.lower() in ('true', 'false'):
            raise TypeError(f'TimmBackbone: pretrained must be True, False or a checkpoint path; '
                            f'got the string {pretrained!r} (a string is not read as a bool).')
        load_timm_weights = pretrained is True
        if load_timm_weights:
            if init_cfg is not None:
                raise ValueError("TimmBackbone: pass either pretrained=True (timm's loader) or "
                                 "init_cfg=dict(type='Pretrained', ...), not both.")
            timm_kwargs['pretrained_cfg_overlay'] = self._local_weights_overlay(
                model_name, timm_kwargs.get('pretrained_cfg_overlay'))
        if isinstance(pretrained, bool):  # a str (or anything else) is BaseBackbone's to check
            pretrained = None
        timm_kwargs['in_chans'] = check_in_channels('TimmBackbone', in_channels)

        info, default_levels = self._probe_feature_info(model_name, timm_kwargs)
        stem_levels = self._count_stem_levels(info)
        if out_indices is None:
            out_indices = self._stage_indices(default_levels, stem_levels, len(info))
        max_stages = len(info) - stem_levels
        if num_stages is None:
            num_stages = self._default_num_stages(out_indices, max_stages)
        super().__init__(max_stages=max_stages, in_channels=in_channels,
                         num_stages=num_stages, out_indices=out_indices,
                         frozen_stages=frozen_stages, norm_eval=norm_eval, with_cp=with_cp,
                         channels_last=channels_last, plugins=plugins, pretrained=pretrained,
                         init_cfg=init_cfg)
        self.model_name = model_name
        self.stem_levels = stem_levels
        levels = info[:self.stem_levels + self.num_stages]  # the timm features that are built
        stage_levels = tuple(range(self.stem_levels, len(levels)))
        wanted = self.timm_out_indices
        # timm returns exactly the wanted levels unless more stages were asked for than they need
        timm_indices = wanted if wanted[-1] == stage_levels[-1] else stage_levels
        self._picks = None if timm_indices == wanted else list(self.out_indices)
        import timm
        self.timm_model = timm.create_model(model_name, features_only=True,
                                            out_indices=timm_indices,
                                            pretrained=load_timm_weights, **timm_kwargs)
        self._is_init = load_timm_weights  # init_weights() must not touch loaded weights
        for feature in levels[self.stem_levels:]:
            self.stage_channels.append(int(feature['num_chs']))
            self.stage_strides.append(int(feature['reduction']))
        self._build_stage_views(levels)
        if self.with_cp:
            self._enable_grad_checkpointing()
        self.init_conventions()

    # ------------------------------------------------------------------ arguments
    @staticmethod
    def _check_model_name(model_name: str) -> None:
        import timm
        if not isinstance(model_name, str):
            raise TypeError(f'TimmBackbone: model_name must be a timm model name (str), got '
                            f'{model_name!r}.')
        if ':' in model_name:
            raise ValueError(f'TimmBackbone: model_name {model_name!r} names a model source; '
                             f'timm does not download here, so give a plain timm name such as '
                             f"'resnet50d' and the weights through init_cfg (a local file or "
                             f"'mmbackbones://timm/<model>.<tag>').")
        if not timm.is_model(model_name):
            base = model_name.split('.')[0]
            close = difflib.get_close_matches(base, timm.list_models(), n=8, cutoff=0.6)
            hint = (f'close matches: {", ".join(close)}' if close else
                    'see timm.list_models() for the names')
            raise ValueError(f'TimmBackbone: model_name {model_name!r} is not a timm model; '
                             f'{hint}.')

    def _check_timm_kwargs(self, model_name: str, timm_kwargs: dict) -> dict:
        self._check_model_name(model_name)
        timm_kwargs = dict(timm_kwargs)
        mmcv_args = [k for k in MMCV_ONLY_ARGS if k in timm_kwargs]
        if mmcv_args:
            raise ValueError(
                f'TimmBackbone: {", ".join(mmcv_args)} ({timm_kwargs[mmcv_args[0]]!r}) do not '
                f'apply to timm models, which build their own layers. Pass timm arguments '
                f'instead (e.g. norm_layer= where {model_name!r} takes one); use norm_eval for '
                f"frozen BN statistics and the runner's sync_bn='torch' for SyncBN.")
        if timm_kwargs.pop('features_only', True) is not True:
            raise ValueError('TimmBackbone: features_only=False is not possible; TimmBackbone '
                             'always builds timm features_only models.')
        if 'in_chans' in timm_kwargs:
            raise ValueError(f"TimmBackbone: pass in_channels={timm_kwargs['in_chans']!r} "
                             f'instead of timm\'s in_chans.')
        if 'checkpoint_path' in timm_kwargs:
            raise ValueError(
                f"TimmBackbone: checkpoint_path={timm_kwargs['checkpoint_path']!r} is not "
                f"supported; use init_cfg=dict(type='Pretrained', checkpoint=...), which loads "
                f'timm state dicts and reports what matched.')
        return timm_kwargs

    @staticmethod
    def _local_weights_overlay(model_name: str, overlay: Optional[dict]) -> dict:
        """timm's pretrained_cfg overlay reduced to a local file: no other source is left."""
        overlay = dict(overlay or {})
        path = overlay.get('file')
        if not path:
            raise ValueError(
                f'TimmBackbone: pretrained=True for {model_name!r} needs a local weights file; '
                f'timm does not download here. Pass pretrained_cfg_overlay=dict(file=PATH) '
                f"(any format timm reads, .safetensors included), or init_cfg=dict(type="
                f"'Pretrained', checkpoint=PATH or 'mmbackbones://timm/<model>.<tag>') with "
                f"pretrained=False.")
        if not os.path.isfile(path):
            raise FileNotFoundError(f'TimmBackbone: pretrained_cfg_overlay file {path!r} does '
                                    f'not exist.')
        overlay.update(file=path, url=None, hf_hub_id=None, hf_hub_filename=None, source=None,
                       state_dict=None)
        return overlay

    @staticmethod
    def _probe_feature_info(model_name: str, timm_kwargs: dict) -> Tuple[List[dict], Tuple]:
        """timm's feature_info (every feature) and default out_indices, from a meta-device build.

        When timm's default out_indices do not fit the model (a ViT with fewer blocks than the
        default's), the default is every feature.
        """
        import timm
        probe_kwargs = dict(timm_kwargs, pretrained_cfg_overlay=None)

        def build_probe(device: str):
            with torch.device(device):
                try:
                    probe = timm.create_model(model_name, features_only=True, pretrained=False,
                                              **probe_kwargs)
                    count = len(probe.feature_info.info)
                    return probe, tuple(i % count for i in probe.feature_info.out_indices)
                except AssertionError:
                    probe = timm.create_model(model_name, features_only=True, pretrained=False,
                                              out_indices=(0, ), **probe_kwargs)
                    return probe, tuple(range(len(probe.feature_info.info)))

        try:
            try:
                probe, defaults = build_probe('meta')
            except NotImplementedError:  # an op without a meta kernel (regnet's torch.unique on
                probe, defaults = build_probe('cpu')  # some torch versions): build it for real
        except TypeError as err:
            unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(err))
            if unexpected is None:
                raise
            arg = unexpected.group(1)
            raise TypeError(f'TimmBackbone: timm model {model_name!r} does not take {arg}='
                            f'{timm_kwargs.get(arg)!r} ({err}).') from err
        except Exception as err:  # noqa: BLE001 - timm signals this with bare asserts and more
            raise ValueError(f'TimmBackbone: timm model {model_name!r} cannot be built with '
                             f'features_only=True (timm raised {type(err).__name__}: {err}); '
                             f'choose a model with feature_info, or other arguments.') from err
        return [dict(f) for f in probe.feature_info.info], defaults

    @staticmethod
    def _count_stem_levels(info: List[dict]) -> int:
        """How many leading timm feature levels are finer than stride 4 (folded into the stem).

        At least one level always stays a stage, so a model whose every level is finer than
        stride 4 keeps its last level as stage 0.
        """
        count = 0
        while count < len(info) - 1 and int(info[count]['reduction']) < STAGE0_STRIDE:
            count += 1
        return count

    @staticmethod
    def _stage_indices(levels: Sequence[int], stem_levels: int, num_levels: int
                       ) -> Tuple[int, ...]:
        """timm feature levels -> stage indices; levels inside the stem are dropped (all
        stages when nothing is left)."""
        stages = tuple(level - stem_levels for level in levels if level >= stem_levels)
        return stages or tuple(range(num_levels - stem_levels))

    @property
    def timm_out_indices(self) -> Tuple[int, ...]:
        """timm's feature indices (``feature_info``) of the returned maps: ``out_indices``
        shifted by the levels folded into the stem."""
        return tuple(i + self.stem_levels for i in self.out_indices)

    @staticmethod
    def _default_num_stages(out_indices: Sequence[int], max_stages: int) -> int:
        """``max(out_indices) + 1``; invalid indices fall back to all stages (validated later)."""
        try:
            needed = max(out_indices) + 1
        except (TypeError, ValueError):
            return max_stages
        return needed if isinstance(needed, int) and 1 <= needed <= max_stages else max_stages

    # ------------------------------------------------------------------ stages
    def _build_stage_views(self, info: List[dict]) -> None:
        modules = dict(self.timm_model.named_modules())
        cuts = []
        for index, feature in enumerate(info):
            names = [rename(feature['module']) for rename in TIMM_KEY_RENAMES]
            found = [name for name in names if name in modules]
            if not found:
                raise RuntimeError(f'TimmBackbone: timm feature {index} of {self.model_name!r} '
                                   f'is module {feature["module"]!r}, which its features_only '
                                   f'model {type(self.timm_model).__name__} does not contain.')
            cuts.append(found[0])
        groups = _group_by_features(self.timm_model, cuts)
        # the stem: what runs before feature 0, and the levels finer than stride 4
        stem_groups, stage_groups = groups[:self.stem_levels + 1], groups[self.stem_levels + 1:]
        stem = ([n for modules, _ in stem_groups for n in modules],
                [n for _, tensors in stem_groups for n in tensors])
        views = [TimmStage(self, [f'timm_model.{n}' for n in module_names],
                           [f'timm_model.{n}' for n in tensor_names])
                 for module_names, tensor_names in [stem] + stage_groups]
        del self.stages  # BaseBackbone's ModuleList: timm's modules stay in timm's tree
        self.stem = views[0]
        self.stages = views[1:]

    def _enable_grad_checkpointing(self) -> None:
        owner = self.timm_model
        if not hasattr(owner, 'set_grad_checkpointing'):  # FeatureGetterNet wraps the model
            owner = getattr(owner, 'model', owner)
        try:
            owner.set_grad_checkpointing(True)
        except (AttributeError, AssertionError, NotImplementedError) as err:
            raise ValueError(f'TimmBackbone: timm model {self.model_name!r} '
                             f'({type(self.timm_model).__name__}) has no gradient '
                             f'checkpointing; set with_cp=False.') from err

    def set_frozen_stages(self, frozen_stages: int) -> None:
        super().set_frozen_stages(frozen_stages)
        trainable = getattr(self, '_trainable_at_build', None)
        frozen = {id(view) for view in self.frozen_modules()}
        for view in self._pipeline():  # loose tensors (a ViT's pos_embed) are not in modules
            if id(view) not in frozen:
                for name, tensor, is_param in view._loose_tensors():
                    if is_param:
                        tensor.requires_grad = trainable is None or name in trainable

    # ------------------------------------------------------------------ forward
    def forward_stages(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outs = self.timm_model(x)
        if self._picks is not None:
            outs = [outs[i] for i in self._picks]
        return tuple(outs)

    # ------------------------------------------------------------------ weights
    def map_checkpoint_keys(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Keys of a plain timm checkpoint renamed to this backbone's (``timm_model.`` + the
        name in timm's feature wrapper); keys of this backbone and unknown keys are kept."""
        own = self.state_dict()
        mapped = {}
        for key, value in state.items():
            if key not in own:
                for rename in TIMM_KEY_RENAMES:
                    candidate = 'timm_model.' + rename(key)
                    if candidate in own:
                        key = candidate
                        break
            mapped[key] = value
        return mapped
