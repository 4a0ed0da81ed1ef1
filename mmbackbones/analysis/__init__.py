from .timing import PairTiming, time_pair

__all__ = ['PairTiming', 'time_pair']
