"""Dial plans in the Cisco/Yealink digit-map syntax: when has the user dialled a whole number?

A map is alternatives separated by ``|``; each is a sequence of elements:
``0``-``9``, ``*``, ``#`` (that key), ``x`` (any digit), ``[2-9]`` / ``[135]`` (a set or range),
``.`` (the previous element repeated zero or more times) and a trailing ``T`` (complete only
after the inter-digit timeout, for open-ended numbers). Example: ``[2-9]xxx|0[1-9]x.T|*xx``.

Hand-written rather than via `re` because the phone needs *partial* matching ("could more
digits still make this a number?"), which Python's regular expressions cannot answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

KEYS = "0123456789*#"


class DigitMapError(ValueError):
    """A digit map that cannot be parsed; the message names the pattern and the position."""


class Match(enum.Enum):
    """What the dialled digits are so far."""

    NONE = "none"  # no pattern can match, whatever follows
    PARTIAL = "partial"  # a prefix of some pattern: wait for more digits
    TIMEOUT = "timeout"  # complete for a ``T`` pattern (or extendable): send when the timer fires
    COMPLETE = "complete"  # complete and final: send now


@dataclass(frozen=True, slots=True)
class _Element:
    chars: frozenset[str]
    repeat: bool


@dataclass(frozen=True, slots=True)
class _Pattern:
    elements: tuple[_Element, ...]
    timer: bool

    def _walk(self, digits: str) -> set[int]:
        """Element positions reachable after consuming all of ``digits``."""
        states = self._closure({0})
        for d in digits:
            nxt: set[int] = set()
            for i in states:
                if i < len(self.elements) and d in self.elements[i].chars:
                    nxt.add(i if self.elements[i].repeat else i + 1)
            states = self._closure(nxt)
            if not states:
                break
        return states

    def _closure(self, states: set[int]) -> set[int]:
        out = set(states)
        for i in sorted(states):
            j = i
            while j < len(self.elements) and self.elements[j].repeat:
                j += 1
                out.add(j)
        return out

    def match(self, digits: str) -> tuple[bool, bool]:
        """(complete, can_extend) for ``digits``."""
        states = self._walk(digits)
        complete = len(self.elements) in states
        extend = any(i < len(self.elements) for i in states)
        return complete, extend


class DigitMap:
    """A parsed digit map; `match(digits)` says whether to wait, time out or send."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.patterns = tuple(_parse(p.strip(), text) for p in text.split("|"))

    def match(self, digits: str) -> Match:
        best = Match.NONE
        for pattern in self.patterns:
            complete, extend = pattern.match(digits)
            if complete and not pattern.timer and not extend:
                return Match.COMPLETE
            if complete:
                best = Match.TIMEOUT
            elif extend and best is Match.NONE:
                best = Match.PARTIAL
        return best


def _parse(pattern: str, whole: str) -> _Pattern:
    if not pattern:
        raise DigitMapError(f"digit map {whole!r} has an empty alternative")
    elements: list[_Element] = []
    timer = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if timer:
            raise DigitMapError(f"in {pattern!r}: 'T' must be the last character")
        if c in KEYS:
            elements.append(_Element(frozenset(c), False))
        elif c in "xX":
            elements.append(_Element(frozenset("0123456789"), False))
        elif c == "[":
            end = pattern.find("]", i)
            if end < 0:
                raise DigitMapError(f"in {pattern!r}: '[' at position {i} is never closed")
            elements.append(_Element(_charset(pattern, pattern[i + 1 : end]), False))
            i = end
        elif c == ".":
            if not elements or elements[-1].repeat:
                raise DigitMapError(f"in {pattern!r}: '.' at position {i} repeats nothing")
            elements[-1] = _Element(elements[-1].chars, True)
        elif c in "tT":
            timer = True
        else:
            raise DigitMapError(f"in {pattern!r}: unexpected {c!r} at position {i}")
        i += 1
    if not elements:
        raise DigitMapError(f"in {pattern!r}: no digits to match")
    return _Pattern(tuple(elements), timer)


def _charset(pattern: str, body: str) -> frozenset[str]:
    chars: set[str] = set()
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            lo, hi = body[i], body[i + 2]
            if not (lo.isdigit() and hi.isdigit() and lo <= hi):
                raise DigitMapError(f"in {pattern!r}: bad range {body[i : i + 3]!r}")
            chars.update(str(d) for d in range(int(lo), int(hi) + 1))
            i += 3
            continue
        if body[i] not in KEYS:
            raise DigitMapError(f"in {pattern!r}: {body[i]!r} cannot be dialled")
        chars.add(body[i])
        i += 1
    if not chars:
        raise DigitMapError(f"in {pattern!r}: empty set []")
    return frozenset(chars)
