# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Training hooks registered in mmdet's HOOKS registry (importing this package registers them)."""

from .act_learn import VanillaNetActLearnHook
from .frozen_stages import FrozenStagesScheduleHook
from .rng_state import RNGStateHook
from .train_cost import TrainCostHook

__all__ = ['VanillaNetActLearnHook', 'FrozenStagesScheduleHook', 'RNGStateHook', 'TrainCostHook']
