"""Bad input to every public entry point: a clear error naming the argument and the valid choices.

Backbone cases run for every backbone registered by mmbackbones (the families of
``tests/matrix/test_backbone_matrix.py``, tiny configs from the conventions ``CASES``); converter
cases for every script in ``tools/model_converters/``.

The bad-input table (``backbone_cases``, one ``test_bad_input_case`` per entry) covers, for every
family: ``in_channels`` (0, negative, float, str, None, bool); every bool argument given
``'False'``, ``'True'``, 1 or None; ``num_stages`` / ``out_indices`` / ``frozen_stages`` of the
wrong type or range; norm configs that do not exist or cannot normalise (N, C, H, W) maps (LN,
GN without ``num_groups``, BN1d) and malformed ones; unknown ``act_cfg`` / ``conv_cfg`` types;
an ``init_cfg`` that is not a dict; plugins of an unknown type, without a type, with ``stages``
of the wrong type or length, not in a list; misspelt arch names ("did you mean"), arch dicts with
a missing, misspelt or mistyped key; the family's own arguments; and ``forward`` inputs that are
not an (N, C, H, W) float tensor of ``in_channels`` channels and at least ``min_input_size``
(numpy arrays, lists, rank 3 / 5, integer, float64 and CPU float16 tensors, 4 channels, smaller
than the total stride). Each case asserts the error type, that the message starts with the
family, names the argument and shows the bad value. ``tools/analysis/bad_input_census.py``
counts the outcomes.

=================================  ===========================  =================================
case                               entry point                  expected error
=================================  ===========================  =================================
unknown arch name                  ``MODELS.build`` of the      ``ValueError``: ``arch 'x' is
                                   backbone config              unknown; choose one of`` + names
                                                                (TimmBackbone: ``model_name ...
                                                                is not a timm model``, close
                                                                matches)
arch of the wrong type             same                         ``TypeError`` naming ``arch``
arch dict: missing / unknown key   same                         ``ValueError``: ``arch dict has
                                                                missing ...`` / ``unknown ...``
                                                                + required and optional keys
out_indices out of range,          same                         ``ValueError`` naming
unsorted, empty                                                 ``out_indices`` and the range
frozen_stages out of range         same                         ``ValueError`` naming
                                                                ``frozen_stages`` and the range
plugin position that does not      same                         ``ValueError``: ``plugin position
exist                                                           ... does not exist; choose one
                                                                of`` (or ``does not support
                                                                plugins``)
norm_cfg type that does not exist  same                         ``ValueError``: ``norm_cfg type
                                                                ... is not a registered norm
                                                                layer; choose one of`` (Timm:
                                                                ``... do not apply``)
checkpoint of the wrong family     ``init_cfg=Pretrained``,     ``RuntimeError``: ``below
                                   ``init_weights()``           min_loaded_ratio``, naming the
                                                                file and the missing keys
truncated checkpoint file          ``init_weights()``;          ``CorruptCheckpointError`` naming
                                   mmengine                     the file; tools/test.py:
                                   ``load_checkpoint``;         ``UsageError`` naming
                                   ``check_checkpoint_arg``     ``checkpoint``
converter given the wrong source   every script in              exit 1, ``error:`` on stderr; no
                                   tools/model_converters       output file, no temporary file
converter given a truncated file   same                         exit 1, ``error:`` naming the
                                                                file; no files
neck in_channels that disagree     tools/train.py               exit 2: ``model.neck.in_channels=
with the backbone                  (``launch.load_config``)     ... disagrees`` + the right
                                                                channels; no work dir created
=================================  ===========================  =================================
"""
import contextlib
import copy
import inspect
import io
import runpy
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest
import torch
from mmdet.registry import MODELS

from mmbackbones.engine.checkpoint import CorruptCheckpointError
from tests.matrix.test_backbone_matrix import FAMILIES, NO_NAMED_ARCHS, tiny_config
from tests.paths import REPO

CONVERTERS = sorted((REPO / 'tools' / 'model_converters').glob('*.py'))


@pytest.fixture(params=list(FAMILIES), ids=list(FAMILIES))
def family(request) -> str:
    return request.param


def build(cfg: dict, **kwargs):
    return MODELS.build(dict(copy.deepcopy(cfg), **kwargs))


# ------------------------------------------------------------------ backbone arguments


def test_unknown_arch_name(family):
    cfg = tiny_config(family)
    if family in NO_NAMED_ARCHS:  # TimmBackbone: the arch is a timm model name
        with pytest.raises(ValueError, match=r"model_name 'resnet5O' is not a timm model; close "
                                             r"matches: .*resnet50"):
            build(cfg, model_name='resnet5O')
        return
    names = ', '.join(FAMILIES[family].arch_settings)
    with pytest.raises(ValueError, match=rf"{family}: arch 'no-such-arch' is unknown; choose one "
                                         rf"of {names}, or pass a dict with keys"):
        build(cfg, arch='no-such-arch')
    with pytest.raises(TypeError, match=rf'{family}: arch must be a str .* or a dict'):
        build(cfg, arch=3.5)


def test_malformed_arch_dict(family):
    cls = FAMILIES[family]
    cfg = tiny_config(family)
    if family in NO_NAMED_ARCHS:
        with pytest.raises(TypeError, match='model_name must be a timm model name'):
            build(cfg, model_name=dict(depths=(1, 1)))
        return
    arch = dict(cfg['arch']) if isinstance(cfg.get('arch'), dict) \
        else dict(cls.arch_settings[next(iter(cls.arch_settings))])
    required = tuple(cls.arch_schema.required)
    missing = dict(arch)
    del missing[required[0]]
    with pytest.raises(ValueError, match=rf'{family}: arch dict has missing {required[0]}\. '
                                         rf'Required keys: {", ".join(required)}'):
        build(cfg, arch=missing)
    with pytest.raises(ValueError, match=rf'{family}: arch dict has unknown colour\. Required '
                                         rf'keys: {", ".join(required)}'):
        build(cfg, arch=dict(arch, colour='red'))


@pytest.mark.parametrize('bad', [(0, 9), (2, 1), ()])
def test_wrong_out_indices(family, bad):
    with pytest.raises(ValueError, match=r'out_indices=.*(outside the valid range 0\.\.\d|'
                                         r'unique and sorted|non-empty sequence of ints in 0\.\.)'):
        build(tiny_config(family), out_indices=bad)


@pytest.mark.parametrize('bad', [-2, 9])
def test_frozen_stages_out_of_range(family, bad):
    with pytest.raises(ValueError, match=rf'frozen_stages={bad} is out of range; use -1 '
                                         r'\(nothing\), 0 \(the stem\) or k in 1\.\.\d'):
        build(tiny_config(family), frozen_stages=bad)


def test_plugin_position_that_does_not_exist(family):
    positions = FAMILIES[family].plugin_positions
    plugins = [dict(cfg=dict(type='ContextBlock', ratio=0.25), position='after_conv9')]
    expected = (rf"plugin position 'after_conv9' does not exist; choose one of "
                rf"{', '.join(positions)}" if positions else f'{family} does not support plugins')
    with pytest.raises(ValueError, match=expected):
        build(tiny_config(family), plugins=plugins)


def test_norm_cfg_type_that_does_not_exist(family):
    cfg = tiny_config(family)
    if family in NO_NAMED_ARCHS:  # timm builds its own layers and refuses mmcv layer configs
        with pytest.raises(ValueError, match=r'norm_cfg .* do not apply to timm models'):
            build(cfg, norm_cfg=dict(type='BatchNormz'))
        return
    with pytest.raises(ValueError, match=r"norm_cfg type 'BatchNormz' is not a registered norm "
                                         r"layer; choose one of .*\bBN\b.*\bGN\b"):
        build(cfg, norm_cfg=dict(type='BatchNormz'))


# ------------------------------------------------------------------ the bad-input table
#
# Every case builds a backbone (or runs a built one) with one bad argument or input and expects a
# ValueError / TypeError whose message names the argument (``names``) and shows the bad value
# (``shows``). ``census`` runs them all and counts how many are clear, unclear or silently
# accepted (``tools/analysis/bad_input_census.py`` prints it).


@dataclass
class BadCase:
    family: str
    category: str
    label: str
    error: type
    names: Tuple[str, ...]
    shows: Tuple[str, ...] = ()
    kwargs: Optional[dict] = None  # constructor arguments over the tiny config
    inputs: Optional[Callable[[Any], Any]] = None  # forward input, given the built model

    @property
    def id(self) -> str:
        return f'{self.family}-{self.category}-{self.label}'


def _bool_args(family: str) -> List[str]:
    """Constructor arguments documented as bools (a bool default); not TimmBackbone's
    ``pretrained``, which also takes a path."""
    params = inspect.signature(FAMILIES[family]).parameters
    return [n for n, p in params.items() if isinstance(p.default, bool) and n != 'pretrained']


def _takes(family: str, arg: str) -> bool:
    return arg in inspect.signature(FAMILIES[family]).parameters


def _arch_dict(family: str) -> Optional[dict]:
    cfg = tiny_config(family)
    return dict(cfg['arch']) if isinstance(cfg.get('arch'), dict) else None


def _mistyped(value: Any) -> Any:
    """The value with its first number / bool / string written as another type."""
    if isinstance(value, (list, tuple)):
        return [_mistyped(value[0]), *value[1:]]
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return str(value)
    return 7


def _typo(word: str) -> str:
    """``word`` with its last character doubled: close enough for a "did you mean"."""
    return word + word[-1]


def backbone_cases(family: str) -> List[BadCase]:
    cases: List[BadCase] = []

    def add(category, label, error, names, shows=(), **kw):
        cases.append(BadCase(family, category, label, error, tuple(names), tuple(shows), **kw))

    def arg(category, name, value, error, label=None, names=None, shows=None):
        add(category, label or f'{name}={value!r}', error, names or (name, ),
            (repr(value), ) if shows is None else shows, kwargs={name: value})

    # in_channels
    for value, error in ((0, ValueError), (-1, ValueError), (3.0, TypeError), ('3', TypeError),
                         (None, TypeError), (True, TypeError)):
        arg('in_channels', 'in_channels', value, error)
    # bool flags: bool-like strings, ints and None are refused
    for name in _bool_args(family):
        for value in ('False', 'True', 1, None):
            arg('bool', name, value, TypeError)
    # stage arguments
    for value, error in ((True, TypeError), (2.0, TypeError), ('4', TypeError), (0, ValueError),
                         (99, ValueError)):
        arg('stages', 'num_stages', value, error)
    for value, error in ((True, TypeError), (1.0, TypeError), ('0', TypeError),
                         ((0, 1.5), TypeError), ((0, 9), ValueError), ((), ValueError)):
        arg('stages', 'out_indices', value, error)
    for value, error in ((True, TypeError), (1.0, TypeError), ('1', TypeError),
                         (None, TypeError), (-2, ValueError), (99, ValueError)):
        arg('stages', 'frozen_stages', value, error)
    # norm layers: one that does not exist, or builds but cannot normalise (N, C, H, W) maps
    norm_args = [n for n in ('norm_cfg', 'out_norm_cfg') if _takes(family, n)] or ['norm_cfg']
    for name in norm_args:
        for value, error, shows in (
                (dict(type='BatchNormz'), ValueError, "'BatchNormz'"),
                (dict(type='LN'), ValueError, "'LN'"),
                (dict(type='GN'), ValueError, "'GN'"),
                (dict(type='BN1d'), ValueError, "'BN1d'"),
                (dict(requires_grad=True), TypeError, "'requires_grad'"),
                ('BN', TypeError, "'BN'")):
            if not _takes(family, name):  # TimmBackbone refuses every mmcv layer config
                error = ValueError
            arg('norm', name, value, error, shows=(shows, ))
    for name in ('act_cfg', 'conv_cfg', 'attn_act_cfg'):
        if _takes(family, name):
            arg('layer_cfg', name, dict(type='NoSuchLayer'), ValueError, shows=("'NoSuchLayer'", ))
    arg('init', 'init_cfg', 'Pretrained', TypeError)
    # plugins
    positions = FAMILIES[family].plugin_positions
    plugin = dict(cfg=dict(type='ContextBlock', ratio=0.25),
                  position=positions[0] if positions else 'after_block')
    if positions:
        for label, value, error, names, shows in (
                ('unknown type', [dict(plugin, cfg=dict(type='NoSuchPlugin'))], ValueError,
                 ('plugin', 'type'), ("'NoSuchPlugin'", )),
                ('cfg without type', [dict(plugin, cfg=dict(ratio=0.25))], ValueError,
                 ('plugin', 'cfg', 'type'), ("{'ratio': 0.25}", )),
                ('stages=True', [dict(plugin, stages=True)], TypeError, ('stages', ), ('True', )),
                ("stages='TFTF'", [dict(plugin, stages='TFTF')], TypeError, ('stages', ),
                 ("'TFTF'", )),
                ('stages of ints', [dict(plugin, stages=(1, 0, 1, 1))], TypeError, ('stages', ),
                 ('(1, 0, 1, 1)', )),
                ('stages too short', [dict(plugin, stages=(True, ) * 3)], ValueError,
                 ('stages', ), ('(True, True, True)', )),
                ('a dict, not a list', plugin, TypeError, ('plugins', ), ('dict', )),
                ('position None', [dict(plugin, position=None)], ValueError, ('position', ),
                 ('None', ))):
            add('plugins', label, error, names, shows, kwargs=dict(plugins=value))
    else:
        add('plugins', 'not supported', ValueError, ('plugins', ), kwargs=dict(plugins=[plugin]))
    # arch
    cls = FAMILIES[family]
    if cls.arch_settings:
        name = next(iter(cls.arch_settings))
        add('arch', 'typo', ValueError, ('arch', 'did you mean'), (repr(_typo(name)), repr(name)),
            kwargs=dict(arch=_typo(name)))
        arg('arch', 'arch', 3.5, TypeError)
        arch = _arch_dict(family)
        keys = list(arch)
        add('arch', 'missing key', ValueError, ('arch', 'missing'), (keys[0], ),
            kwargs=dict(arch={k: v for k, v in arch.items() if k != keys[0]}))
        add('arch', 'misspelt key', ValueError, ('arch', 'unknown', 'did you mean'),
            (repr(keys[0] + 's'), repr(keys[0])),
            kwargs=dict(arch={(k + 's' if k == keys[0] else k): v for k, v in arch.items()}))
        for key in keys:
            bad = _mistyped(arch[key])
            add('arch', f'{key} mistyped', ValueError, (repr(key), ), (repr(bad), ),
                kwargs=dict(arch=dict(arch, **{key: bad})))
    else:  # TimmBackbone: the arch is a timm model name
        add('arch', 'typo', ValueError, ('model_name', 'close matches'), ("'resnet5O'", ),
            kwargs=dict(model_name='resnet5O'))
        add('arch', 'model_name dict', TypeError, ('model_name', ), ('{',),
            kwargs=dict(model_name=dict(depths=(1, 1))))
    # family arguments
    for name, value, error, extra in FAMILY_ARGS.get(family, ()):
        add('family', f'{name}={value!r}', error, (name, ), (repr(value), ) + extra,
            kwargs={name: value})
    # forward inputs
    forward = [
        ('numpy array', lambda m: _image(m).numpy(), TypeError, ('ndarray', )),
        ('list of tensors', lambda m: [_image(m)], TypeError, ('list', )),
        ('rank 3', lambda m: _image(m)[0], ValueError, ('(3, 64, 64)', )),
        ('rank 5', lambda m: _image(m)[None], ValueError, ('(1, 1, 3, 64, 64)', )),
        ('uint8', lambda m: (_image(m) * 255).to(torch.uint8), TypeError, ('torch.uint8', )),
        ('int64', lambda m: _image(m).long(), TypeError, ('torch.int64', )),
        ('float64', lambda m: _image(m).double(), TypeError, ('torch.float64', )),
        ('float16 on CPU', lambda m: _image(m).half(), TypeError, ('torch.float16', )),
        ('4 channels', lambda m: torch.rand(1, 4, 64, 64), ValueError, ('(1, 4, 64, 64)',
                                                                        'in_channels=3')),
        ('smaller than the stride', lambda m: _image(m, _min_size(m) - 1), ValueError,
         ('at least',)),
        ('1x1', lambda m: _image(m, 1), ValueError, ('1x1', 'at least')),
    ]
    for label, inputs, error, shows in forward:
        add('forward', label, error, ('input x', ), shows, inputs=inputs)
    return cases


def _min_size(model) -> int:
    """The smallest input side the backbone runs on: the largest stride of the stages it runs."""
    return max(model.stage_strides[:model.out_indices[-1] + 1])


def _image(model, side: int = 64) -> torch.Tensor:
    return torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))


#: Arguments only some families take: (name, bad value, error, more text the message shows).
FAMILY_ARGS: Dict[str, Sequence[Tuple[str, Any, type, Tuple[str, ...]]]] = {
    'VoVNet': [('ese_layout', 'al', ValueError, ("'all'", )), ('depth', 20, ValueError, ('19', ))],
    'ShuffleNetV2': [('widen_factor', 0.75, ValueError, ('0.5', )),
                     ('widen_factor', True, TypeError, ()),
                     ('widen_factor', '1.0', TypeError, ())],
    'YOLOv8CSPDarknet': [('stem_type', 'Conv', ValueError, ("'conv'", )),
                         ('sppf_kernel_size', 4, ValueError, ('odd', )),
                         ('sppf_kernel_size', '5', TypeError, ())],
    'VanillaNet': [('act_num', 0, ValueError, ()), ('act_num', 2.5, TypeError, ()),
                   ('act_learn', 2, ValueError, ('[0, 1]', )),
                   ('act_learn', '1', TypeError, ())],
    'MogaNet': [('drop_path_rate', 'x', TypeError, ()), ('drop_path_rate', 1.5, ValueError, ()),
                ('drop_rate', 2.0, ValueError, ()), ('drop_rate', None, TypeError, ()),
                ('init_value', 'x', TypeError, ())],
    'PResNet': [('depth', 51, ValueError, ('50', ))],
}

CASES_TABLE = [case for family in FAMILIES for case in backbone_cases(family)]

_BUILT: Dict[str, Any] = {}


def _built(family: str):
    """The tiny config of ``family`` in eval mode, built once per process."""
    if family not in _BUILT:
        _BUILT[family] = build(tiny_config(family)).eval()
    return _BUILT[family]


def run_case(case: BadCase) -> None:
    """Build (and for forward cases run) the backbone of ``case``; raises what it raises."""
    cfg = tiny_config(case.family)
    if case.inputs is None:
        build(cfg, **case.kwargs)
        return
    model = _built(case.family)
    with torch.no_grad():
        model(case.inputs(model))


def classify(case: BadCase) -> Tuple[str, str, bool]:
    """``('clear' | 'unclear' | 'silent', message, strict)``: clear is a ValueError / TypeError
    whose message names the argument (case-insensitively); strict is what
    ``test_bad_input_case`` asserts (the expected type, the family, the name and the value)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            run_case(case)
    except Exception as exc:  # noqa: BLE001 - what is raised is what is classified
        message = f'{type(exc).__name__}: {exc}'
        text = str(exc).lower()
        named = all(n.lower() in text for n in case.names)
        clear = isinstance(exc, (ValueError, TypeError)) and named
        strict = (clear and isinstance(exc, case.error) and str(exc).startswith(case.family)
                  and all(w.lower() in text for w in case.shows))
        return ('clear' if clear else 'unclear'), message, strict
    return 'silent', '', False


def census(cases: Sequence[BadCase] = None) -> Dict[str, Dict[str, int]]:
    """Counts of clear / unclear / silent cases per category (and ``'all'``), with the
    unclear and silent ones listed under ``'_bad'``; ``strict`` counts the clear cases that also
    pass ``test_bad_input_case``."""
    counts: Dict[str, Dict[str, int]] = {}
    bad = []
    for case in CASES_TABLE if cases is None else cases:
        outcome, message, strict = classify(case)
        for key in (case.category, 'all'):
            row = counts.setdefault(key, dict(clear=0, unclear=0, silent=0, strict=0))
            row[outcome] += 1
            row['strict'] += strict
        if outcome != 'clear':
            bad.append(f'{outcome:8s} {case.id}: {message[:160]}')
    counts['_bad'] = bad  # type: ignore[assignment]
    return counts


@pytest.mark.parametrize('case', CASES_TABLE, ids=[c.id for c in CASES_TABLE])
def test_bad_input_case(case):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(case.error) as info:
            run_case(case)
    message = str(info.value)
    for word in case.names + case.shows:
        assert word.lower() in message.lower(), f'{word!r} not in: {message}'
    assert message.startswith(case.family), message


# ------------------------------------------------------------------ checkpoints


def _save_state(family: str, path: Path) -> Path:
    torch.save({'state_dict': build(tiny_config(family)).state_dict(), 'meta': {}}, path)
    return path


def test_checkpoint_of_the_wrong_family(family, tmp_path):
    names = list(FAMILIES)
    other = names[(names.index(family) + 1) % len(names)]
    path = _save_state(other, tmp_path / f'{other}.pth')
    model = build(tiny_config(family), init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(RuntimeError, match=rf"{family}: loaded \d+/\d+ tensors .* from "
                                           rf"'{path}', below min_loaded_ratio=0\.9\. Refusing"):
        model.init_weights()


def test_truncated_checkpoint(family, tmp_path, load_tool):
    from mmengine.runner.checkpoint import load_checkpoint
    path = _save_state(family, tmp_path / 'cut.pth')
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    model = build(tiny_config(family), init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CorruptCheckpointError, match=r"cut\.pth.*truncated or corrupt.*no zip end "
                                                     r"record ends at the end of the file"):
        model.init_weights()
    with pytest.raises(CorruptCheckpointError, match=r'cut\.pth'):
        load_checkpoint(build(tiny_config(family)), str(path), map_location='cpu')
    from mmbackbones.engine import launch
    with pytest.raises(launch.UsageError, match=r'^checkpoint: .*cut\.pth'):
        launch.check_checkpoint_arg(str(path))


# ------------------------------------------------------------------ converters


def run_converter(script: Path, *args: str):
    """Run a converter script in-process, as ``python script args``; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = [str(script), *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(script), run_name='__main__')
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope='module')
def foreign_source(tmp_path_factory) -> Path:
    """A checkpoint no converter takes: torchvision's MobileNetV3-Small, as a plain state dict."""
    import torchvision
    path = tmp_path_factory.mktemp('foreign') / 'mobilenet_v3_small.pth'
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    return path


@pytest.mark.parametrize('script', CONVERTERS, ids=[p.stem for p in CONVERTERS])
def test_converter_given_the_wrong_source(script, foreign_source, tmp_path):
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    code, stdout, stderr = run_converter(script, foreign_source, out_dir / 'converted.pth')
    assert code == 1, (stdout, stderr)
    assert 'error:' in stderr and ('features.0.0.weight' in stderr or 'features.' in stderr
                                   or 'checkpoint' in stderr), stderr
    assert list(out_dir.iterdir()) == []  # no output, no temporary file

    cut = tmp_path / 'cut.pth'
    data = foreign_source.read_bytes()
    cut.write_bytes(data[:len(data) // 3])
    code, stdout, stderr = run_converter(script, cut, out_dir / 'converted.pth')
    assert code == 1 and 'error:' in stderr and 'cut.pth' in stderr, (stdout, stderr)
    assert list(out_dir.iterdir()) == []


# ------------------------------------------------------------------ configs


def test_neck_in_channels_disagreeing_with_the_backbone(load_tool, tiny_config, tmp_path, capsys):
    from mmengine.config import Config
    cfg = Config.fromfile(tiny_config)
    right = list(cfg.model.neck.in_channels)
    wrong = [c * 2 for c in right]
    work_dir = tmp_path / 'work'
    train = load_tool('train')
    with pytest.raises(SystemExit) as exit_info:
        train.main([tiny_config, '--work-dir', str(work_dir), '--cfg-options',
                    f'model.neck.in_channels={wrong}'.replace(' ', '')])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f'model.neck.in_channels={wrong} disagrees with the backbone' in err, err
    assert f'Set model.neck.in_channels={right}' in err, err
    assert not work_dir.exists()


def test_min_input_size_runs_and_one_less_raises(family):
    model = _built(family)
    side = model.min_input_size
    assert side == max(model.stage_strides[:model.out_indices[-1] + 1])
    with torch.no_grad():
        outs = model(torch.rand(1, 3, side, side))
        assert all(min(o.shape[-2:]) >= 1 and torch.isfinite(o).all() for o in outs)
        for shape in ((side - 1, side), (side, side - 1)):
            with pytest.raises(ValueError, match=rf'input {shape[0]}x{shape[1]} is too small; .* '
                                                 rf'at least {side}x{side}'):
                model(torch.rand(1, 3, *shape))


def test_numpy_bools_bf16_and_autocast_are_accepted(family):
    import numpy as np
    cfg = tiny_config(family)
    flags = {name: np.bool_(not inspect.signature(FAMILIES[family]).parameters[name].default)
             for name in _bool_args(family)
             if name in ('norm_eval', 'channels_last', 'fuse_bn_eval')}
    model = build(cfg, **flags).eval()
    for name, value in flags.items():
        assert getattr(model, name) is bool(value), name
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert all(torch.isfinite(o).all() for o in model(x))
        assert all(torch.isfinite(o).all() for o in model(x.bfloat16()))
