# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Custom ``arch`` dicts checked against a schema each backbone family declares as data.

A family lists its keys, the type of each value and how long each list must be (a fixed
number, or as long as another key's list); :meth:`ArchSchema.check` fills in the defaults and
turns any mismatch into one sentence naming the owner, the key, the bad value and what is
valid. Named variants go through the same check as custom dicts.

Example:
    >>> schema = ArchSchema(
    ...     required=dict(depths=ListOf(Int(min=1)), widths=ListOf(Int(min=1), length='depths')),
    ...     optional=dict(act=(True, Bool())))
    >>> schema.check(dict(depths=(1, 2), widths=[8, 16]), 'Net')
    {'depths': [1, 2], 'widths': [8, 16], 'act': True}
    >>> schema.check(dict(depths=[1, 2], widths=[8]), 'Net')
    Traceback (most recent call last):
    ...
    ValueError: Net: arch 'widths' must be a list of 2 positive ints (one per stage, ...), got [8].
"""
import copy
import difflib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

ArchSpec = Dict[str, Any]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def suggestions(word: Any, choices: Sequence[str]) -> List[str]:
    """The choices a misspelt string was probably meant to be (same letters in another case
    first, then close matches); none for a non-string."""
    if not isinstance(word, str):
        return []
    by_case = [c for c in choices if c.lower() == word.lower()]
    return by_case or difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)


def close_matches(word: Any, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for a misspelt string, else an empty string."""
    close = suggestions(word, choices)
    return f' (did you mean {" or ".join(repr(c) for c in close)}?)' if close else ''


@dataclass(frozen=True)
class Int:
    """An int (not a bool) ``>= min``; ``even`` asks for a multiple of 2."""

    min: Optional[int] = None
    even: bool = False

    def accepts(self, value: Any) -> bool:
        return (_is_int(value) and (self.min is None or value >= self.min)
                and not (self.even and value % 2))

    def noun(self, plural: bool = True) -> str:
        bound = {None: '', 0: 'non-negative ', 1: 'positive '}.get(self.min, '')
        word = f'{bound}{"even " if self.even else ""}int{"s" if plural else ""}'
        if self.min is not None and self.min not in (0, 1):
            word += f' >= {self.min}'
        return word

    def describe(self) -> str:
        noun = self.noun(False)
        return ('an ' if noun[0] in 'aeiou' else 'a ') + noun


@dataclass(frozen=True)
class Number:
    """An int or float (not a bool) ``> above``."""

    above: Optional[float] = 0

    def accepts(self, value: Any) -> bool:
        return _is_number(value) and (self.above is None or value > self.above)

    def noun(self, plural: bool = True) -> str:
        word = ('positive ' if self.above == 0 else '') + ('numbers' if plural else 'number')
        if self.above not in (None, 0):
            word += f' > {self.above}'
        return word

    def describe(self) -> str:
        return 'a ' + self.noun(False)


@dataclass(frozen=True)
class Bool:
    """``True`` or ``False`` (not 0 / 1, not a string)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def noun(self, plural: bool = True) -> str:
        return 'bools' if plural else 'bool'

    def describe(self) -> str:
        return 'True or False'


@dataclass(frozen=True)
class OneOf:
    """One of a few fixed values."""

    choices: Tuple[Any, ...]

    def accepts(self, value: Any) -> bool:
        return any(type(value) is type(c) and value == c for c in self.choices)

    def noun(self, plural: bool = True) -> str:
        return f'value{"s" if plural else ""} in ({", ".join(map(repr, self.choices))})'

    def describe(self) -> str:
        return f'one of {", ".join(map(repr, self.choices))}'


Scalar = Union[Int, Number, Bool, OneOf]


@dataclass(frozen=True)
class ListOf:
    """A list (or tuple) of ``item`` values.

    ``length`` is a fixed count, or the key of another list this one must match (plus
    ``offset``: VanillaNet has one stride fewer than it has widths); ``per`` names what one entry
    stands for in the message, ``note`` what the values mean. ``nullable`` also allows ``None``;
    without a ``length``, at least ``min_length`` values are needed.
    """

    item: Scalar
    length: Union[None, int, str] = None
    offset: int = 0
    per: str = 'stage'
    note: str = ''
    nullable: bool = False
    min_length: int = 1


Rule = Union[Scalar, ListOf]


@dataclass(frozen=True)
class ArchSchema:
    """The keys of a family's ``arch`` dict: ``required`` ones and ``optional`` ones with their
    defaults, each with its :class:`Rule`. Keys are checked in declaration order, so a list whose
    length refers to another key comes after it."""

    required: Dict[str, Rule] = field(default_factory=dict)
    optional: Dict[str, Tuple[Any, Rule]] = field(default_factory=dict)

    @property
    def keys(self) -> Tuple[str, ...]:
        return tuple(self.required) + tuple(self.optional)

    def keys_hint(self) -> str:
        """``'stem, depths and optionally act (True)'``, for messages about the whole dict."""
        hint = ', '.join(self.required)
        if self.optional:
            hint += ' and optionally ' + ', '.join(f'{k} ({d!r})'
                                                   for k, (d, _) in self.optional.items())
        return hint

    def rule(self, key: str) -> Rule:
        return self.required[key] if key in self.required else self.optional[key][1]

    def check(self, spec: ArchSpec, owner: str) -> ArchSpec:
        """``spec`` with the defaults filled in and lists as lists; ValueError on any mismatch."""
        if not isinstance(spec, dict):
            raise TypeError(f'{owner}: arch must be a dict with keys {self.keys_hint()}; got '
                            f'{type(spec).__name__} {spec!r}.')
        missing = [k for k in self.required if k not in spec]
        unknown = [k for k in spec if k not in self.required and k not in self.optional]
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f'missing {", ".join(map(str, missing))}')
            if unknown:
                problems.append(f'unknown {", ".join(map(str, unknown))}')
            hints = ''.join(f' Did you mean {" or ".join(map(repr, suggestions(k, self.keys)))} '
                            f'for {k!r}?' for k in unknown if suggestions(k, self.keys))
            optional = ', '.join(f'{k}={d!r}' for k, (d, _) in self.optional.items())
            raise ValueError(f'{owner}: arch dict has {"; ".join(problems)}. Required keys: '
                             f'{", ".join(self.required)}; optional: {optional or "none"}.'
                             f'{hints}')
        checked = dict(spec)
        for key, (default, _) in self.optional.items():
            checked.setdefault(key, copy.deepcopy(default))
        out = {}
        for key in self.keys:
            out[key] = self._check_value(owner, key, checked[key], out)
        return out

    def _check_value(self, owner: str, key: str, value: Any, done: ArchSpec) -> Any:
        rule = self.rule(key)
        if not isinstance(rule, ListOf):
            if rule.accepts(value):
                return value
            if isinstance(rule, OneOf):
                choices = [str(c) for c in rule.choices]
                raise ValueError(f'{owner}: arch {key!r} {value!r} is unknown; choose one of '
                                 f'{", ".join(choices)}{close_matches(value, choices)}.')
            raise ValueError(f'{owner}: arch {key!r} must be {rule.describe()}, got {value!r}.')
        if value is None and rule.nullable:
            return None
        length, notes = rule.length, [rule.note] if rule.note else []
        if isinstance(rule.length, str):
            ref = done.get(rule.length)
            length = None if ref is None else len(ref) + rule.offset
            if length is not None:
                notes.insert(0, f'one per {rule.per}, i.e. {length} value'
                                f'{"" if length == 1 else "s"} for {rule.length}={ref!r}')
        ok = (isinstance(value, (list, tuple))
              and (len(value) == length if length is not None else len(value) >= rule.min_length)
              and all(rule.item.accepts(v) for v in value))
        if ok:
            return list(value)
        if length is not None:
            count = f'{length} '
        else:
            count = f'at least {rule.min_length} ' if rule.min_length > 1 else ''
        none = 'None or ' if rule.nullable else ''
        why = f' ({"; ".join(notes)})' if notes else ''
        raise ValueError(f'{owner}: arch {key!r} must be {none}a list of {count}'
                         f'{rule.item.noun(plural=length != 1)}{why}, got {value!r}.')
