from .timing import PairTiming, median_interval, time_pair

__all__ = ['PairTiming', 'median_interval', 'time_pair']
