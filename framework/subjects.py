"""NATS subject rules and ``*`` / ``>`` wildcard matching: the single source of truth.

A subject is ``.``-separated tokens. Tokens are non-empty runs of printable ASCII other
than space, ``.``, ``*``, ``>``, ``{`` and ``}``. A *pattern* may also use ``*`` (exactly
one token) as a whole token anywhere and ``>`` (one or more tokens) as the whole last
token. Template placeholders (``{symbol}``) must be expanded before anything here is
called, so braces are always an error.

The in-process bus, the topology lint and the NATS transport all use this module, so
they agree on what is valid and what matches what.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Generic, TypeVar

__all__ = [
    "SubjectError",
    "SubjectIndex",
    "check_pattern",
    "check_subject",
    "covers",
    "intersects",
    "is_wildcard",
    "matches",
    "tokens",
    "validate_pattern",
    "validate_subject",
]

T = TypeVar("T")

STAR = "*"
GT = ">"

_TOKEN_CHARS = "".join(re.escape(chr(c)) for c in range(0x21, 0x7F) if chr(c) not in ".*>{}")
_TOKEN = f"[{_TOKEN_CHARS}]+"
_SUBJECT_FULLMATCH = re.compile(rf"{_TOKEN}(?:\.{_TOKEN})*").fullmatch
_PATTERN_FULLMATCH = re.compile(rf"(?:{_TOKEN}|\*)(?:\.(?:{_TOKEN}|\*))*(?:\.>)?|>").fullmatch


class SubjectError(ValueError):
    """A malformed subject or pattern; the message says what is wrong and where."""


def _diagnose(text: object, *, concrete: bool) -> str:
    kind = "subject" if concrete else "pattern"
    if not isinstance(text, str):
        return f"{kind} must be a str, got {type(text).__name__}"
    if not text:
        return f"empty {kind}"
    toks = text.split(".")
    last = len(toks)
    for pos, tok in enumerate(toks, 1):
        where = f"at position {pos} in {text!r}"
        if not tok:
            return f"empty token {where}"
        for ch in tok:
            if ch in "{}":
                return (
                    f"unexpanded template placeholder in token {tok!r} {where}: "
                    "'{' and '}' are not allowed (expand placeholders first)"
                )
            if ch.isspace():
                return f"whitespace {ch!r} in token {tok!r} {where}"
            if ord(ch) < 0x20 or ord(ch) == 0x7F:
                return f"control character {ch!r} in token {tok!r} {where}"
            if ord(ch) > 0x7F:
                return f"non-ASCII character {ch!r} in token {tok!r} {where}"
        if tok in (STAR, GT):
            if concrete:
                return f"wildcard {tok!r} {where} is not allowed in a concrete subject"
            if tok == GT and pos != last:
                return f"'>' must be the last token, found {where}"
        elif STAR in tok or GT in tok:
            wc = STAR if STAR in tok else GT
            return f"wildcard character {wc!r} inside token {tok!r} {where}: wildcards must be whole tokens"
    return f"malformed {kind} {text!r}"


def check_subject(subject: str) -> str | None:
    """Return ``None`` if ``subject`` is a valid concrete subject, else the reason it is not."""
    if type(subject) is str and _SUBJECT_FULLMATCH(subject):
        return None
    return _diagnose(subject, concrete=True)


def check_pattern(pattern: str) -> str | None:
    """Return ``None`` if ``pattern`` is a valid pattern (wildcards allowed), else the reason."""
    if type(pattern) is str and _PATTERN_FULLMATCH(pattern):
        return None
    return _diagnose(pattern, concrete=False)


def validate_subject(subject: str) -> None:
    """Raise :class:`SubjectError` unless ``subject`` is a valid concrete subject."""
    reason = check_subject(subject)
    if reason is not None:
        raise SubjectError(reason)


def validate_pattern(pattern: str) -> None:
    """Raise :class:`SubjectError` unless ``pattern`` is a valid pattern."""
    reason = check_pattern(pattern)
    if reason is not None:
        raise SubjectError(reason)


def tokens(subject: str) -> tuple[str, ...]:
    """Split a subject or pattern into its tokens; raises :class:`SubjectError` if malformed."""
    validate_pattern(subject)
    return tuple(subject.split("."))


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> tuple[tuple[str, ...], bool, bool]:
    """``(tokens without a trailing '>', ends with '>', has any wildcard)``."""
    validate_pattern(pattern)
    toks = tuple(pattern.split("."))
    tail = toks[-1] == GT
    prefix = toks[:-1] if tail else toks
    return prefix, tail, tail or STAR in prefix


def is_wildcard(pattern: str) -> bool:
    """True if ``pattern`` contains a ``*`` or ``>`` token (raises if malformed)."""
    return _compile(pattern)[2]


def matches(pattern: str, subject: str) -> bool:
    """True if the concrete ``subject`` is matched by ``pattern``.

    Raises :class:`SubjectError` if either is malformed or ``subject`` has wildcards.
    """
    prefix, tail, wild = _compile(pattern)
    if type(subject) is not str or not _SUBJECT_FULLMATCH(subject):
        raise SubjectError(_diagnose(subject, concrete=True))
    if not wild:
        return subject == pattern
    parts = subject.split(".")
    if tail:
        if len(parts) <= len(prefix):
            return False
    elif len(parts) != len(prefix):
        return False
    for p, s in zip(prefix, parts):
        if p != s and p != STAR:
            return False
    return True


def intersects(a: str, b: str) -> bool:
    """True if at least one concrete subject is matched by both patterns ``a`` and ``b``."""
    pa, ta, _ = _compile(a)
    pb, tb, _ = _compile(b)
    for x, y in zip(pa, pb):
        if x != y and x != STAR and y != STAR:
            return False
    na, nb = len(pa), len(pb)
    if na == nb:
        return ta == tb
    if na < nb:
        return ta
    return tb


def covers(general: str, specific: str) -> bool:
    """True if every subject matched by ``specific`` is also matched by ``general``."""
    pg, tg, _ = _compile(general)
    ps, ts, _ = _compile(specific)
    if len(ps) < len(pg):
        return False
    for g, s in zip(pg, ps):
        if g != s and g != STAR:
            return False
    if tg:
        return len(ps) > len(pg) or ts
    return not ts and len(ps) == len(pg)


class _Node:
    __slots__ = ("children", "exact", "rest")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.exact: list[tuple[int, object]] = []
        self.rest: list[tuple[int, object]] = []

    def empty(self) -> bool:
        return not (self.children or self.exact or self.rest)


class SubjectIndex(Generic[T]):
    """Patterns -> values, answering 'which values match this concrete subject' fast.

    Patterns live in a token trie, so a lookup walks the subject's tokens instead of
    testing every pattern. Results are cached per concrete subject (a dict, cleared on
    ``add``/``remove`` and when it reaches ``cache_size`` entries), so the hot path of a
    bus publish is one dict lookup.
    """

    def __init__(self, cache_size: int = 100_000) -> None:
        self._root = _Node()
        self._seq = 0
        self._count = 0
        self._patterns: dict[str, int] = {}
        self._cache: dict[str, tuple[T, ...]] = {}
        self._cache_size = cache_size

    def _path(self, pattern: str, create: bool) -> Iterator[tuple[_Node, str]]:
        node = self._root
        for tok in _compile(pattern)[0]:
            nxt = node.children.get(tok)
            if nxt is None:
                if not create:
                    raise KeyError((pattern,))
                nxt = node.children[tok] = _Node()
            yield node, tok
            node = nxt
        yield node, ""

    def add(self, pattern: str, value: T) -> None:
        """Register ``value`` under ``pattern`` (validated; raises :class:`SubjectError`)."""
        node = [n for n, _ in self._path(pattern, create=True)][-1]
        regs = node.rest if _compile(pattern)[1] else node.exact
        regs.append((self._seq, value))
        self._seq += 1
        self._count += 1
        self._patterns[pattern] = self._patterns.get(pattern, 0) + 1
        self._cache.clear()

    def remove(self, pattern: str, value: T) -> None:
        """Remove one registration of ``value`` under ``pattern``; ``KeyError`` if absent."""
        path = list(self._path(pattern, create=False))
        node = path[-1][0]
        regs = node.rest if _compile(pattern)[1] else node.exact
        for i, (_, v) in enumerate(regs):
            if v is value or v == value:
                del regs[i]
                break
        else:
            raise KeyError((pattern, value))
        for (parent, tok), (child, _) in zip(reversed(path[:-1]), reversed(path[1:])):
            if not child.empty():
                break
            del parent.children[tok]
        self._count -= 1
        left = self._patterns[pattern] - 1
        if left:
            self._patterns[pattern] = left
        else:
            del self._patterns[pattern]
        self._cache.clear()

    def lookup(self, subject: str) -> tuple[T, ...]:
        """Values of every pattern matching the concrete ``subject``, in registration order."""
        try:
            return self._cache[subject]
        except (KeyError, TypeError):
            pass
        if type(subject) is not str or not _SUBJECT_FULLMATCH(subject):
            raise SubjectError(_diagnose(subject, concrete=True))
        found: list[tuple[int, object]] = []
        nodes = [self._root]
        for tok in subject.split("."):
            nxt = []
            for node in nodes:
                if node.rest:
                    found.extend(node.rest)
                children = node.children
                if children:
                    child = children.get(tok)
                    if child is not None:
                        nxt.append(child)
                    child = children.get(STAR)
                    if child is not None:
                        nxt.append(child)
            nodes = nxt
            if not nodes:
                break
        for node in nodes:
            found.extend(node.exact)
        found.sort(key=_first)
        result: tuple[T, ...] = tuple(v for _, v in found)  # type: ignore[misc]
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[subject] = result
        return result

    def __len__(self) -> int:
        return self._count

    def patterns(self) -> list[str]:
        """The distinct patterns with at least one registration."""
        return list(self._patterns)


def _first(reg: tuple[int, object]) -> int:
    return reg[0]
