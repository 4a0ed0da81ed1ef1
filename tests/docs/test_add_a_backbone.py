# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""docs/add_a_backbone.md runs: its ``python`` blocks, in order, in one namespace.

The guide registers ``CustomBackbone`` in mmdet's MODELS. The class is defined in a module
named outside the ``mmbackbones`` package, so the backbone matrix (which collects registered
classes of the package) never sees it, and it is removed from the registry afterwards so no
later test finds it.
"""
import copy
import re

import pytest
import torch
from mmdet.registry import MODELS

from mmbackbones.models.backbones.base import BaseBackbone
from mmbackbones.models.layers import bn_folding
from tests.models.backbones import test_conventions as conventions
from tests.numerics import randomize
from tests.paths import REPO

GUIDE = REPO / 'docs' / 'add_a_backbone.md'
NAME = 'CustomBackbone'


def python_blocks(text: str):
    return re.findall(r'^```python\n(.*?)^```', text, flags=re.S | re.M)


@pytest.fixture(scope='module')
def guide():
    """The guide's namespace after running every python block; unregistered afterwards."""
    assert MODELS.get(NAME) is None, f'{NAME} is registered before the guide ran'
    blocks = python_blocks(GUIDE.read_text())
    assert len(blocks) >= 5
    namespace = {'__name__': 'add_a_backbone_guide'}
    try:
        for index, block in enumerate(blocks):
            exec(compile(block, f'{GUIDE.name}, python block {index + 1}', 'exec'), namespace)
        yield namespace
    finally:
        MODELS.module_dict.pop(NAME, None)
    assert MODELS.get(NAME) is None


def test_guide_registers_a_working_backbone(guide):
    cls = MODELS.get(NAME)
    assert cls is guide[NAME] and issubclass(cls, BaseBackbone)
    assert not cls.__module__.startswith('mmbackbones.')  # invisible to the matrix
    assert set(cls.arch_settings) == {'tiny', 'small'}
    model = guide['model']
    assert isinstance(model, cls) and model.frozen_stages == 1
    assert model.out_channels == (64, 96, 128) and model.out_strides == (8, 16, 32)


def test_guide_backbone_equals_the_plain_network(guide):
    """The backbone computes what the guide's plain PyTorch network computes, given its weights
    (stem to stem, stage to stage, tensors in the same order)."""
    plain = randomize(guide['PlainNet'](), seed=1).eval()
    ours = MODELS.build(dict(type=NAME, arch='tiny')).eval()
    parts = [('stem', ours.stem, plain.stem)] + [
        (f'stages.{i}', mine, theirs) for i, (mine, theirs) in enumerate(zip(ours.stages,
                                                                            plain.stages))]
    state = {}
    for prefix, mine, theirs in parts:
        names, tensors = list(mine.state_dict()), list(theirs.state_dict().values())
        assert len(names) == len(tensors)
        state.update({f'{prefix}.{n}': t for n, t in zip(names, tensors)})
    ours.load_state_dict(state)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = plain(x)
        for a, b in zip(ours(x), expected):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        with bn_folding(False):
            for a, b in zip(ours(x), expected):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_guide_backbone_passes_the_conventions_contract(guide, tmp_path):
    """The guide's tiny config goes through a sample of the shared conventions tests."""
    tiny = copy.deepcopy(guide['tiny'])
    conventions.test_outputs_match_out_indices_channels_and_strides(tiny)
    conventions.test_num_stages_builds_only_those_stages(tiny)
    conventions.test_frozen_stages_do_not_change_under_sgd(tiny, 2)
    conventions.test_frozen_stages_record_no_autograd_graph(tiny)
    conventions.test_norm_eval(tiny)
    conventions.test_with_cp_gives_identical_gradients(tiny)
    conventions.test_plugins_positions(tiny)
    conventions.test_pretrained_init_cfg_loads_and_reports(tiny, tmp_path)
    with pytest.raises(ValueError, match=r"CustomBackbone: arch 'stage_blocks' must be 4 "
                                         r"positive ints"):
        MODELS.build(dict(tiny, arch=dict(tiny['arch'], stage_blocks=[1, 1, 0, 1])))
    with pytest.raises(ValueError, match=r"CustomBackbone: arch 'huge' is unknown; choose one "
                                         r"of tiny, small"):
        MODELS.build(dict(type=NAME, arch='huge'))
