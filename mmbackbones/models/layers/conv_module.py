"""mmcv's ConvModule (and DepthwiseSeparableConvModule) with BatchNorm folded into the conv for
inference.

In eval mode with gradients off (``torch.no_grad`` / ``torch.inference_mode``: mmengine's val
and test loops, ``mmdet.apis`` inference), conv + BN + activation is one op: the BN statistics
and affine parameters are folded into the conv's weight and bias, and on the CPU the
activation runs inside the oneDNN convolution (ReLU, SiLU). oneDNN's fused ReLU is max(x, 0),
which turns NaN into 0 where torch's ReLU keeps it, so the backbone runs an input that is not
all finite through the exact path instead (:meth:`BaseBackbone.forward`). This is the fusion ultralytics'
``fuse()`` and deployment tools apply by hand; here it needs no call and no export step, and
the module, its parameters and its state dict stay as they are.

The folded weights are cached and rebuilt whenever any source tensor changes (an optimizer
step, ``load_state_dict``, ``.to()``), detected through each tensor's storage and version
counter, and on every ``train()`` / ``eval()`` call (mmengine's EMAHook swaps weights through
``.data``, which no version counter sees, and then calls ``model.eval()``). Whoever edits
weights through ``.data`` in eval mode by hand should call ``eval()`` again afterwards.
Anything the fold cannot express exactly runs mmcv's own forward: training
mode, gradients on, a norm other than BatchNorm / FrozenBatchNorm, a non-plain conv (DCN,
explicit padding layers), another layer order, ``activate=False`` / ``norm=False``, tracing,
scripting and ``torch.compile`` (which folds on its own).
"""
import contextlib
from typing import Iterator, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule as MMCVConvModule
from mmcv.cnn.bricks.swish import Swish
from torch import nn

from .conv_fusion import fuse_conv_bn, is_batch_norm

# activation modules oneDNN's fused convolution runs itself (its 'attr' names)
_ONEDNN_ACTIVATIONS = {nn.ReLU: 'relu', nn.SiLU: 'swish', Swish: 'swish'}


def _onednn_pointwise_available() -> bool:
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, '_convolution_pointwise'))


_ONEDNN = _onednn_pointwise_available()


_FOLDING_OFF = 0  # depth of active ``bn_folding(False)`` blocks


@contextlib.contextmanager
def bn_folding(enabled: bool) -> Iterator[None]:
    """Switch BN folding off (or back on) for every backbone inside the block.

    ``with bn_folding(False):`` runs the exact conv -> BN -> act sequence, e.g. to compare with
    another implementation bit for bit, or to count FLOPs of the architecture as written.
    """
    global _FOLDING_OFF
    previous = _FOLDING_OFF
    _FOLDING_OFF = 0 if enabled else previous + 1
    try:
        yield
    finally:
        _FOLDING_OFF = previous


class FoldableConvModule(MMCVConvModule):
    """mmcv's ``ConvModule`` (same arguments, parameters and state dict), whose eval-mode,
    no-grad forward is a single convolution with the BatchNorm folded in.

    Named apart from mmcv's ``ConvModule`` so the two are never confused: every conv + norm + act
    of mmbackbones is this class (or :class:`FoldableDepthwiseSeparableConvModule`).

    Attributes:
        fuse_bn_eval (bool): Use the folded path when it applies. The backbone sets it from its
            ``fuse_bn_eval`` argument. Default: True.
    """

    fuse_bn_eval = True

    def forward(self, x: torch.Tensor, activate: bool = True,
                norm: bool = True) -> torch.Tensor:
        if activate and norm and self._foldable(x):
            return self._folded_forward(x)
        return super().forward(x, activate, norm)

    def _foldable(self, x: torch.Tensor) -> bool:
        if (not self.fuse_bn_eval or _FOLDING_OFF or self.training or torch.is_grad_enabled()
                or torch.jit.is_tracing() or torch.jit.is_scripting()
                or torch.compiler.is_compiling()):
            return False
        norm = self.norm if self.with_norm else None
        return (norm is not None and not norm.training and is_batch_norm(norm)
                and norm.running_mean is not None and tuple(self.order) == ('conv', 'norm', 'act')
                and not self.with_explicit_padding and type(self.conv) is nn.Conv2d
                and self.conv.padding_mode == 'zeros' and x.dim() == 4)

    def _folded_params(self) -> Tuple[torch.Tensor, torch.Tensor]:
        norm = self.norm
        sources = (self.conv.weight, self.conv.bias, norm.weight, norm.bias, norm.running_mean,
                   norm.running_var)
        key = tuple(None if t is None else (t.data_ptr(), t._version, t.dtype, t.device)
                    for t in sources) + (norm.eps, )
        cache = self.__dict__.get('_fold_cache')
        if cache is not None and cache[0] == key:
            return cache[1], cache[2]
        weight, bias = fuse_conv_bn(self.conv.weight, self.conv.bias, norm)
        if self.conv.weight.is_contiguous(memory_format=torch.channels_last):
            weight = weight.contiguous(memory_format=torch.channels_last)
        # a plain attribute (not a buffer): never in the state dict, rebuilt after a deepcopy
        self.__dict__['_fold_cache'] = (key, weight, bias)
        return weight, bias

    def train(self, mode: bool = True) -> 'FoldableConvModule':
        # Every train() / eval() call starts a fresh fold. Writes through ``.data`` (mmengine's
        # EMAHook swaps weights that way before validation, then calls model.eval()) do not
        # move a tensor's version counter, so this is what catches them.
        self.__dict__.pop('_fold_cache', None)
        return super().train(mode)

    def _folded_forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self._folded_params()
        conv = self.conv
        act = self.activate if self.with_activation else None
        attr = 'none' if act is None else _ONEDNN_ACTIVATIONS.get(type(act))
        if (_ONEDNN and attr is not None and x.device.type == 'cpu'
                and x.dtype == weight.dtype == torch.float32
                and not torch.is_autocast_enabled('cpu')):
            return torch.ops.mkldnn._convolution_pointwise(
                x, weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation),
                conv.groups, attr, [], '')
        out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return out if act is None else act(out)


class FoldableDepthwiseSeparableConvModule(nn.Module):
    """mmcv's ``DepthwiseSeparableConvModule`` built from :class:`FoldableConvModule`, so the
    depthwise and the pointwise conv + BN (+ act) both fold in eval mode under ``no_grad``.

    Same arguments, submodule names (``depthwise_conv``, ``pointwise_conv``), parameters, state
    dict keys, construction order (so a seeded build initialises the same weights) and forward
    as mmcv's, whose own class always builds mmcv's unfolded ``ConvModule``.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels of the pointwise conv.
        kernel_size (int | tuple[int, int]): Kernel of the depthwise conv.
        stride, padding, dilation: Of the depthwise conv. Default: 1, 0, 1.
        norm_cfg (dict, optional): Norm of both convs unless overridden. Default: None.
        act_cfg (dict, optional): Activation of both convs unless overridden.
            Default: ``dict(type='ReLU')``.
        dw_norm_cfg, dw_act_cfg, pw_norm_cfg, pw_act_cfg (dict | str, optional): Per-conv
            overrides; ``'default'`` takes ``norm_cfg`` / ``act_cfg``. Default: ``'default'``.
        **kwargs: Other :class:`FoldableConvModule` arguments, shared by both (``groups`` is
            not allowed: the depthwise conv has ``groups=in_channels``).
    """

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: Union[int, Tuple[int, int]],
                 stride: Union[int, Tuple[int, int]] = 1,
                 padding: Union[int, Tuple[int, int]] = 0,
                 dilation: Union[int, Tuple[int, int]] = 1,
                 norm_cfg: Optional[dict] = None, act_cfg: Optional[dict] = dict(type='ReLU'),
                 dw_norm_cfg: Union[dict, str, None] = 'default',
                 dw_act_cfg: Union[dict, str, None] = 'default',
                 pw_norm_cfg: Union[dict, str, None] = 'default',
                 pw_act_cfg: Union[dict, str, None] = 'default', **kwargs) -> None:
        super().__init__()
        if 'groups' in kwargs:
            raise ValueError(f"FoldableDepthwiseSeparableConvModule: groups={kwargs['groups']!r} "
                             f'cannot be set; the depthwise conv has groups=in_channels and the '
                             f'pointwise conv groups=1.')

        def pick(cfg: Union[dict, str, None], default: Optional[dict]) -> Optional[dict]:
            return default if isinstance(cfg, str) and cfg == 'default' else cfg

        self.depthwise_conv = FoldableConvModule(
            in_channels, in_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=in_channels, norm_cfg=pick(dw_norm_cfg, norm_cfg),
            act_cfg=pick(dw_act_cfg, act_cfg), **kwargs)
        self.pointwise_conv = FoldableConvModule(
            in_channels, out_channels, 1, norm_cfg=pick(pw_norm_cfg, norm_cfg),
            act_cfg=pick(pw_act_cfg, act_cfg), **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))
