from .activation_checkpoint import maybe_checkpoint
from .osa import OSAModule, vovnet_conv3x3
from .plugin import PluginSequence, apply_plugins
from .shuffle import ShuffleUnit, channel_shuffle
from .squeeze_excite import EffectiveSE

__all__ = ['maybe_checkpoint', 'OSAModule', 'vovnet_conv3x3', 'PluginSequence', 'apply_plugins',
           'EffectiveSE', 'ShuffleUnit', 'channel_shuffle']
