"""TimmBackbone: parity with timm's features_only models, the stage convention (stage 0 is the
stride-4 level; finer timm levels are in the stem), loading, errors.

The shared conventions contract runs on it in test_conventions.py (a tiny inception_next).
Here each family is a small real timm model; weights are random with randomised BN statistics.
"""
import copy
import socket

import pytest
import timm
import torch
from mmdet.models.necks import FPN
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope
from torch.nn.modules.batchnorm import _BatchNorm

from mmbackbones.models import TimmBackbone, get_feature_info
from tests.numerics import max_abs_diff, randomize

init_default_scope('mmdet')
ODD_INPUT = (1, 3, 67, 93)

# One small model per family, timm's kwargs to make it smaller, the out_indices a detector uses
# and the timm features they are (timm_indices: feature_info levels finer than stride 4 belong
# to the stem, so stage 0 is the stride-4 level: resnet feature 0 is act1, regnet's is the stem,
# efficientnet's is blocks.0, all stride 2; convnext's stages.0 is stride 4 and a ViT's blocks
# are stride 16, so nothing is folded there). `frozen` lists, for frozen_stages=0, 1 and 2, a
# parameter that must then be frozen and one that must stay trainable, by timm's module names.
FAMILIES = {
    'resnet': dict(model_name='resnet10t', out_indices=(0, 1, 2, 3), kwargs={},
                   timm_indices=(1, 2, 3, 4),
                   frozen={0: ('conv1.0.weight', 'layer1.0.conv1.weight'),
                           1: ('layer1.0.conv1.weight', 'layer2.0.conv1.weight'),
                           2: ('layer2.0.conv1.weight', 'layer3.0.conv1.weight')}),
    'convnext': dict(model_name='convnext_atto', out_indices=(0, 1, 2, 3),
                     kwargs=dict(depths=(1, 1, 2, 1), dims=(16, 24, 32, 40)),
                     timm_indices=(0, 1, 2, 3),
                     frozen={0: ('stem.0.weight', 'stages.0.blocks.0.conv_dw.weight'),
                             1: ('stages.0.blocks.0.conv_dw.weight',
                                 'stages.1.blocks.0.conv_dw.weight'),
                             2: ('stages.1.downsample.1.weight',
                                 'stages.2.blocks.0.conv_dw.weight')}),
    'efficientnet': dict(model_name='efficientnet_b0', out_indices=(0, 1, 2, 3), kwargs={},
                         timm_indices=(1, 2, 3, 4),
                         frozen={0: ('blocks.0.0.conv_dw.weight', 'blocks.1.0.conv_pw.weight'),
                                 1: ('blocks.1.0.conv_pw.weight', 'blocks.2.0.conv_pw.weight'),
                                 2: ('blocks.2.0.conv_pw.weight', 'blocks.3.0.conv_pw.weight')}),
    'regnet': dict(model_name='regnetx_002', out_indices=(0, 1, 2, 3), kwargs={},
                   timm_indices=(1, 2, 3, 4),
                   frozen={0: ('stem.conv.weight', 's1.b1.conv1.conv.weight'),
                           1: ('s1.b1.conv1.conv.weight', 's2.b1.conv1.conv.weight'),
                           2: ('s2.b1.conv1.conv.weight', 's3.b1.conv1.conv.weight')}),
    'vit': dict(model_name='vit_tiny_patch16_224', out_indices=(1, 2, 3),
                kwargs=dict(depth=4, embed_dim=48, num_heads=3, img_size=(64, 96)),
                timm_indices=(1, 2, 3),
                frozen={0: ('pos_embed', 'blocks.0.attn.qkv.weight'),
                        1: ('blocks.0.attn.qkv.weight', 'blocks.1.attn.qkv.weight'),
                        2: ('blocks.1.attn.qkv.weight', 'blocks.2.attn.qkv.weight')}),
}
CNNS = ['resnet', 'convnext', 'efficientnet', 'regnet']


def input_for(family: str, seed: int = 0) -> torch.Tensor:
    shape = (1, 3, 64, 96) if family == 'vit' else ODD_INPUT  # the ViT has a fixed patch grid
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def random_timm_model(family: str) -> torch.nn.Module:
    """A plain (classification) timm model with random weights, BN statistics and scales."""
    spec = FAMILIES[family]
    model = randomize(timm.create_model(spec['model_name'], **spec['kwargs']), seed=1)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # LayerNorm affines, layer scales (1e-6 in convnext), embeddings
        for name, param in model.named_parameters():
            if param.dim() == 1 or 'embed' in name or 'token' in name:
                param.add_(torch.rand(param.shape, generator=gen) * 0.5)
    return model.eval()


@pytest.fixture(scope='module')
def timm_checkpoint(tmp_path_factory):
    """family -> path of a plain timm state dict (classifier included), as users save one."""
    root = tmp_path_factory.mktemp('timm_ckpts')
    paths = {}
    for family in FAMILIES:
        paths[family] = root / f'{family}.pth'
        torch.save(random_timm_model(family).state_dict(), paths[family])
    return paths


def timm_features(family: str, path) -> torch.nn.Module:
    """timm's own features_only model, loaded by timm's own loader from the local file."""
    spec = FAMILIES[family]
    return timm.create_model(spec['model_name'], features_only=True,
                             out_indices=spec['timm_indices'], pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(path)), **spec['kwargs']).eval()


def ours(family: str, **kwargs) -> TimmBackbone:
    spec = FAMILIES[family]
    cfg = dict(type='TimmBackbone', model_name=spec['model_name'],
               out_indices=spec['out_indices'], **spec['kwargs'])
    cfg.update(kwargs)
    return MODELS.build(cfg)


# ---------------------------------------------------------------- parity and loading
@pytest.mark.parametrize('family', list(FAMILIES))
def test_outputs_equal_timm_features_only(family, timm_checkpoint):
    """A plain timm checkpoint loaded through init_cfg gives timm's features, bit for bit."""
    reference = timm_features(family, timm_checkpoint[family])
    model = ours(family, init_cfg=dict(type='Pretrained', checkpoint=str(timm_checkpoint[family])))
    model.init_weights()
    model.eval()
    x = input_for(family)
    with torch.no_grad():
        expected, outs = reference(x), model(x)
    assert model.timm_out_indices == FAMILIES[family]['timm_indices']
    assert max_abs_diff(outs, expected) == 0.0
    assert tuple(o.shape[1] for o in outs) == model.out_channels
    assert model.out_channels == tuple(reference.feature_info.channels())
    assert model.out_strides == tuple(reference.feature_info.reduction())
    if family != 'vit':
        assert model.out_strides[0] == 4  # stage 0 is the stride-4 level


@pytest.mark.parametrize('family', ['resnet', 'efficientnet'])
def test_init_cfg_reports_the_dropped_classifier(family, timm_checkpoint):
    model = ours(family)
    report = model.load_pretrained(str(timm_checkpoint[family]))
    head = {'resnet': ['fc.bias', 'fc.weight'],
            'efficientnet': ['classifier.bias', 'classifier.weight', 'conv_head.weight',
                             'bn2.bias', 'bn2.num_batches_tracked', 'bn2.running_mean',
                             'bn2.running_var', 'bn2.weight']}[family]
    assert sorted(report['unexpected']) == sorted(head)
    assert report['missing'] == [] and report['shape_mismatch'] == []


def test_pretrained_true_loads_the_local_file_with_timms_loader(timm_checkpoint):
    reference = timm_features('convnext', timm_checkpoint['convnext'])
    model = ours('convnext', pretrained=True,
                 pretrained_cfg_overlay=dict(file=str(timm_checkpoint['convnext']))).eval()
    model.init_weights()  # weights are loaded: init_weights must leave them alone
    x = input_for('convnext')
    with torch.no_grad():
        assert max_abs_diff(model(x), reference(x)) == 0.0


def test_checkpoint_of_another_model_is_refused(timm_checkpoint):
    model = ours('regnet', init_cfg=dict(type='Pretrained',
                                         checkpoint=str(timm_checkpoint['resnet'])))
    with pytest.raises(RuntimeError, match=r'loaded 0/.*below min_loaded_ratio=0\.9'):
        model.init_weights()


def test_init_weights_without_init_cfg_keeps_timms_initialisation():
    torch.manual_seed(0)
    model = ours('resnet')
    before = copy.deepcopy(model.state_dict())
    model.init_weights()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# ---------------------------------------------------------------- stages, freezing, norm_eval
def _param(model: TimmBackbone, timm_name: str) -> torch.nn.Parameter:
    params = dict(model.named_parameters())
    for key in (f'timm_model.{timm_name}', f'timm_model.{timm_name.replace(".", "_", 1)}',
                f'timm_model.model.{timm_name}'):
        if key in params:
            return params[key]
    raise KeyError(timm_name)


@pytest.mark.parametrize('family', list(FAMILIES))
@pytest.mark.parametrize('frozen', [0, 1, 2])
def test_frozen_stages_follow_timm_feature_modules(family, frozen):
    model = ours(family, frozen_stages=frozen, norm_eval=False).train()
    frozen_name, trainable_name = FAMILIES[family]['frozen'][frozen]
    assert not _param(model, frozen_name).requires_grad
    assert _param(model, trainable_name).requires_grad
    frozen_ids = {id(p) for part in [model.stem] + model.stages[:frozen] for p in part.parameters()}
    assert frozen_ids  # the stem and stages own real parameters
    for name, param in model.named_parameters():
        assert param.requires_grad == (id(param) not in frozen_ids), name
    for part in [model.stem] + model.stages[:frozen]:
        assert all(not m.training for m in part.modules())
    assert all(m.training for m in model.stages[frozen].modules())


@pytest.mark.parametrize('family', CNNS + ['vit'])
def test_frozen_stages_stay_fixed_and_record_no_graph(family):
    """SGD with weight decay and BN in train mode leaves the frozen part bit-identical."""
    torch.manual_seed(0)
    model = ours(family, frozen_stages=2, norm_eval=False).train()
    frozen_part = [model.stem] + model.stages[:2]
    before = [copy.deepcopy(part.state_dict()) for part in frozen_part]
    trainable_before = copy.deepcopy(model.stages[2].state_dict())
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1)
    for step in range(2):
        outs = model(input_for(family, step))
        for index, out in zip(model.out_indices, outs):  # outputs of frozen stages: no graph
            assert (out.grad_fn is None) == (index < 2)
        optim.zero_grad()
        sum(o.square().mean() for o in outs).backward()
        optim.step()
        model.train()
    for part, state in zip(frozen_part, before):
        for key, value in state.items():
            assert torch.equal(value, part.state_dict()[key]), key
    after = model.stages[2].state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in trainable_before.items())


@pytest.mark.parametrize('family', CNNS)
def test_norm_eval_reaches_timms_norm_layers(family):
    model = ours(family, norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if family == 'convnext':  # LayerNorm only: norm_eval has nothing to do
        assert not bns
        return
    assert bns and all(not m.training for m in bns)  # timm's BatchNormAct2d included
    model = ours(family, norm_eval=False).train()
    assert all(m.training for m in model.modules() if isinstance(m, _BatchNorm))


def test_set_frozen_stages_gives_back_a_vits_loose_tensors():
    model = ours('vit', frozen_stages=1)
    assert not _param(model, 'cls_token').requires_grad
    model.set_frozen_stages(-1)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize('family', ['convnext', 'vit'])
def test_with_cp_uses_timms_checkpointing_with_identical_gradients(family):
    torch.manual_seed(0)
    plain = ours(family, norm_eval=True).train()
    ckpt = ours(family, norm_eval=True, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    owner = ckpt.timm_model if family != 'vit' else ckpt.timm_model.model
    assert owner.grad_checkpointing
    x = input_for(family)
    sum(o.square().sum() for o in plain(x)).backward()
    sum(o.square().sum() for o in ckpt(x)).backward()
    ckpt_params = dict(ckpt.named_parameters())
    for name, param in plain.named_parameters():
        if param.grad is not None:
            assert torch.equal(param.grad, ckpt_params[name].grad), name


# ---------------------------------------------------------------- channels, FPN, kwargs
@pytest.mark.parametrize('family', CNNS)
def test_feature_info_gives_fpn_in_channels(family):
    spec = FAMILIES[family]
    cfg = dict(type='TimmBackbone', model_name=spec['model_name'],
               out_indices=spec['out_indices'], **spec['kwargs'])
    info = get_feature_info(cfg)  # built on the meta device
    model = MODELS.build(cfg).eval()
    outs = model(input_for(family))
    assert info.channels == tuple(o.shape[1] for o in outs) == model.out_channels
    assert info.strides == model.out_strides
    neck = FPN(in_channels=list(info.channels), out_channels=16, num_outs=5).eval()
    assert [tuple(o.shape[:2]) for o in neck(outs)] == [(1, 16)] * 5


def test_num_stages_and_out_indices_select_timms_features():
    full = ours('resnet', out_indices=(0, 1, 2, 3)).eval()
    picked = ours('resnet', out_indices=(0, 2), num_stages=4).eval()
    picked.load_state_dict(full.state_dict())
    assert len(picked.stages) == 4 and picked.out_channels == (64, 256)
    assert picked.timm_out_indices == (1, 3)
    x = input_for('resnet')
    with torch.no_grad():
        all_outs, outs = full(x), picked(x)
    assert torch.equal(outs[0], all_outs[0]) and torch.equal(outs[1], all_outs[2])
    default = TimmBackbone('regnetx_002')  # timm's default: all 5 features, the first in the stem
    assert default.out_indices == (0, 1, 2, 3) and default.out_strides == (4, 8, 16, 32)
    assert default.stem_levels == 1 and default.timm_out_indices == (1, 2, 3, 4)


# ---------------------------------------------------------------- one stage convention
# Models by the stride of their first timm feature levels. Expected, from the architectures:
# how many levels are finer than stride 4 (the stem holds them), the strides of the stages,
# parameters frozen_stages=0 freezes (stem + those levels) and the first one of stage 0.
CONVENTION = {
    'resnet50d': dict(stem_levels=1, strides=(4, 8, 16, 32), kwargs={},
                      stem=('conv1.0.weight', 'conv1.6.weight', 'bn1.weight'),
                      stage0='layer1.0.conv1.weight'),
    'efficientnet_b0': dict(stem_levels=1, strides=(4, 8, 16, 32), kwargs={},
                            stem=('conv_stem.weight', 'bn1.weight', 'blocks.0.0.conv_dw.weight',
                                  'blocks.0.0.conv_pw.weight'),
                            stage0='blocks.1.0.conv_pw.weight'),
    'regnetx_002': dict(stem_levels=1, strides=(4, 8, 16, 32), kwargs={},
                        stem=('stem.conv.weight', 'stem.bn.weight'),
                        stage0='s1.b1.conv1.conv.weight'),
    'dla34': dict(stem_levels=2, strides=(4, 8, 16, 32), kwargs={},  # levels at strides 1, 2
                  stem=('base_layer.0.weight', 'level0.0.weight', 'level1.0.weight'),
                  stage0='level2.tree1.conv1.weight'),
    'convnext_tiny': dict(stem_levels=0, strides=(4, 8, 16, 32), kwargs={},  # first level: 4
                          stem=('stem.0.weight', 'stem.1.weight'),
                          stage0='stages.0.blocks.0.conv_dw.weight'),
    'vit_tiny_patch16_224': dict(stem_levels=0, strides=(16, 16, 16, 16),  # first level: 16
                                 kwargs=dict(depth=4, img_size=64),
                                 stem=('cls_token', 'pos_embed', 'patch_embed.proj.weight'),
                                 stage0='blocks.0.attn.qkv.weight'),
}


@pytest.mark.parametrize('name', list(CONVENTION))
def test_stage_zero_is_the_stride_4_level(name):
    """timm's levels finer than stride 4 are in the stem; frozen_stages=0 freezes them with it,
    k freezes the stem and stages 1..k, as for every other backbone (built on meta: no memory)."""
    spec = CONVENTION[name]
    with torch.device('meta'):
        reference = timm.create_model(name, features_only=True, **spec['kwargs'])
        reductions = [int(f['reduction']) for f in reference.feature_info.info]  # every level
        levels = len(reductions)
        model = TimmBackbone(name, out_indices=tuple(range(levels - spec['stem_levels'])),
                             frozen_stages=0, **spec['kwargs'])
    assert model.stem_levels == spec['stem_levels'] == sum(r < 4 for r in reductions)
    assert model.out_strides == spec['strides']
    assert model.out_strides == tuple(reductions[spec['stem_levels']:])
    assert model.timm_out_indices == tuple(range(spec['stem_levels'], levels))
    for timm_name in spec['stem']:
        assert not _param(model, timm_name).requires_grad, timm_name
    assert _param(model, spec['stage0']).requires_grad
    stem_ids = {id(p) for p in model.stem.parameters()}
    for param_name, param in model.named_parameters():
        assert param.requires_grad == (id(param) not in stem_ids), param_name
    model.set_frozen_stages(1)
    assert not _param(model, spec['stage0']).requires_grad
    assert all(p.requires_grad for stage in model.stages[1:] for p in stage.parameters())


def test_stem_keeps_at_least_one_stage():
    """A model whose every level is finer than stride 4 keeps its last level as stage 0."""
    assert TimmBackbone._count_stem_levels([dict(reduction=1), dict(reduction=2)]) == 1
    assert TimmBackbone._count_stem_levels([dict(reduction=2), dict(reduction=4),
                                            dict(reduction=8)]) == 1
    assert TimmBackbone._count_stem_levels([dict(reduction=8), dict(reduction=16)]) == 0


def test_timm_kwargs_and_in_channels_reach_timm():
    model = ours('convnext', drop_path_rate=0.3, in_channels=4)
    assert _param(model, 'stem.0.weight').shape[1] == 4
    drop_paths = [m.drop_prob for m in model.modules() if type(m).__name__ == 'DropPath']
    assert drop_paths and max(drop_paths) == pytest.approx(0.3)
    assert len(model(torch.randn(1, 4, 67, 93))) == 4


def test_channels_last_matches_nchw():
    plain = ours('resnet').eval()
    fast = ours('resnet', channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    with torch.no_grad():
        for a, b in zip(plain(input_for('resnet')), fast(input_for('resnet'))):
            assert b.is_contiguous()
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- errors, no downloads
@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a host fails the test loudly."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f'network access attempted: {args}')
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)
    monkeypatch.setattr(socket, 'getaddrinfo', refuse)
    return attempts


def test_pretrained_true_without_a_file_is_an_error_not_a_download(no_network):
    with pytest.raises(AssertionError, match='network access attempted'):
        socket.create_connection(('huggingface.co', 443))  # the guard is live
    no_network.clear()
    with pytest.raises(ValueError, match=r"pretrained=True for 'resnet10t' needs a local weights "
                                         r"file; timm does not download here"):
        TimmBackbone('resnet10t', pretrained=True)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        TimmBackbone('resnet10t', pretrained=True,
                     pretrained_cfg_overlay=dict(file='/nonexistent/missing.pth'))
    with pytest.raises(ValueError, match="timm does not download here"):
        TimmBackbone('hf-hub:timm/resnet10t.tv_in1k')
    assert no_network == []


def test_unknown_model_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"'convnext_tinyy' is not a timm model; close matches: "
                                         r".*convnext_tiny"):
        TimmBackbone('convnext_tinyy')


def test_model_without_features_only_support():
    # timm's inception_v3 cannot give features while it has its auxiliary classifier.
    with pytest.raises(ValueError, match=r"'inception_v3' cannot be built with "
                                         r"features_only=True"):
        TimmBackbone('inception_v3', aux_logits=True)


def test_with_cp_on_a_model_without_checkpointing():
    with pytest.raises(ValueError, match=r"'convit_tiny' .* has no gradient checkpointing; set "
                                         r"with_cp=False"):
        TimmBackbone('convit_tiny', with_cp=True, depth=2, img_size=64)


def test_argument_errors():
    with pytest.raises(TypeError, match=r"'resnet10t' does not take drop_path_ratee=0\.1"):
        TimmBackbone('resnet10t', drop_path_ratee=0.1)
    with pytest.raises(ValueError, match=r'norm_cfg .* do not apply to timm models'):
        TimmBackbone('resnet10t', norm_cfg=dict(type='SyncBN'))
    with pytest.raises(ValueError, match='pass in_channels=1 instead'):
        TimmBackbone('resnet10t', in_chans=1)
    with pytest.raises(ValueError, match=r'out_indices=\(1, 4\) has \[4\] outside the valid '
                                         r'range 0\.\.3'):
        TimmBackbone('resnet10t', out_indices=(1, 4))
    with pytest.raises(ValueError, match='TimmBackbone does not support plugins'):
        TimmBackbone('resnet10t', plugins=[dict(cfg=dict(type='ContextBlock', ratio=0.25),
                                                position='after_block')])
