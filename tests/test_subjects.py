from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.subjects import (
    SubjectError,
    SubjectIndex,
    check_pattern,
    check_subject,
    covers,
    intersects,
    is_wildcard,
    matches,
    tokens,
    validate_pattern,
    validate_subject,
)

# --- examples ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("foo.*", "foo.bar", True),
        ("foo.*", "foo.bar.baz", False),
        ("foo.*", "foo", False),
        ("foo.>", "foo.bar", True),
        ("foo.>", "foo.bar.baz", True),
        ("foo.>", "foo", False),
        ("*.alert.*", "eu.alert.high", True),
        ("*.alert.*", "eu.alert", False),
        ("*.alert.*", "eu.warn.high", False),
        ("*.alert.*", "eu.alert.high.x", False),
        (">", "a", True),
        (">", "md.EURUSD.tick", True),
        ("*", "a", True),
        ("*", "a.b", False),
        ("*.*.>", "a.b", False),
        ("*.*.>", "a.b.c", True),
        ("md.EURUSD.tick", "md.EURUSD.tick", True),
        ("md.EURUSD.tick", "md.EURUSD.ticks", False),
        ("md.EURUSD", "md.EURUSD.tick", False),
    ],
)
def test_matches_examples(pattern: str, subject: str, expected: bool) -> None:
    assert matches(pattern, subject) is expected


@pytest.mark.parametrize(
    ("subject", "fragment"),
    [
        ("", "empty subject"),
        ("a..b", "empty token at position 2 in 'a..b'"),
        (".a", "empty token at position 1"),
        ("a.", "empty token at position 2"),
        (".", "empty token at position 1"),
        ("a b", "whitespace ' '"),
        ("a.\tb", "whitespace '\\t'"),
        ("a.b\x01", "control character"),
        ("a.b\x7f", "control character"),
        ("fx.é", "non-ASCII character 'é'"),
        ("md.{symbol}.tick", "unexpanded template placeholder"),
        ("md.sym}", "unexpanded template placeholder"),
        ("a.*", "wildcard '*' at position 2 in 'a.*' is not allowed in a concrete subject"),
        (">", "not allowed in a concrete subject"),
        ("ab*.c", "wildcard character '*' inside token 'ab*' at position 1"),
        ("a.x>", "wildcard character '>' inside token 'x>' at position 2"),
    ],
)
def test_malformed_subjects(subject: str, fragment: str) -> None:
    reason = check_subject(subject)
    assert reason is not None and fragment in reason
    with pytest.raises(SubjectError, match=re.escape(fragment)):
        validate_subject(subject)


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("", "empty pattern"),
        ("a..>", "empty token at position 2"),
        ("a.>.b", "'>' must be the last token, found at position 2 in 'a.>.b'"),
        (">.>", "'>' must be the last token, found at position 1"),
        ("a*", "wildcard character '*' inside token 'a*'"),
        ("**", "wildcard character '*' inside token '**'"),
        ("a.>>", "wildcard character '>' inside token '>>'"),
        ("fx.{pair}.>", "unexpanded template placeholder"),
        ("a. *", "whitespace"),
        (None, "pattern must be a str, got NoneType"),
    ],
)
def test_malformed_patterns(pattern: str, fragment: str) -> None:
    reason = check_pattern(pattern)
    assert reason is not None and fragment in reason
    with pytest.raises(SubjectError, match=re.escape(fragment)):
        validate_pattern(pattern)


@pytest.mark.parametrize(
    "pattern",
    ["a", "a.b.c", "*", ">", "*.>", "a.*.c", "a.*.>", "md.EUR-USD_1.tick~", "x!#$%&'()+,/:;<=?@[]^`|"],
)
def test_valid_patterns(pattern: str) -> None:
    assert check_pattern(pattern) is None
    validate_pattern(pattern)


def test_subject_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        validate_subject("a..b")


def test_tokens_and_is_wildcard() -> None:
    assert tokens("md.EURUSD.tick") == ("md", "EURUSD", "tick")
    assert tokens("a.*.>") == ("a", "*", ">")
    assert not is_wildcard("md.EURUSD.tick")
    assert is_wildcard("md.*.tick") and is_wildcard("md.>") and is_wildcard(">")
    with pytest.raises(SubjectError):
        tokens("a..b")
    with pytest.raises(SubjectError):
        is_wildcard("a.>.b")


def test_matches_rejects_bad_input() -> None:
    with pytest.raises(SubjectError, match="not allowed in a concrete subject"):
        matches("a.*", "a.*")
    with pytest.raises(SubjectError, match="empty token"):
        matches("a.*", "a..b")
    with pytest.raises(SubjectError, match="must be the last token"):
        matches("a.>.b", "a.b.b")


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("md.EURUSD.tick", "md.*.tick", True),
        ("md.*.tick", "md.>", True),
        ("md.*", "*.tick", True),
        ("md.*", "md.*.*", False),
        ("md.>", "md", False),
        ("a.>", "*.b.>", True),
        ("a.b", "a.c", False),
        (">", "x", True),
        ("*.>", "*", False),
    ],
)
def test_intersects_examples(a: str, b: str, expected: bool) -> None:
    assert intersects(a, b) is expected
    assert intersects(b, a) is expected


@pytest.mark.parametrize(
    ("general", "specific", "expected"),
    [
        (">", "a.*.>", True),
        ("a.>", "a.b", True),
        ("a.>", "a.*.>", True),
        ("a.>", "a", False),
        ("a.*", "a.b", True),
        ("a.*", "a.>", False),
        ("a.b", "a.*", False),
        ("*.*", "a.b", True),
        ("a.b", "a.b", True),
        ("*.>", ">", False),
    ],
)
def test_covers_examples(general: str, specific: str, expected: bool) -> None:
    assert covers(general, specific) is expected


def test_index_basics() -> None:
    idx: SubjectIndex[str] = SubjectIndex()
    idx.add("md.*.tick", "ticks")
    idx.add(">", "all")
    idx.add("md.EURUSD.tick", "eurusd")
    idx.add("md.>", "md")
    assert idx.lookup("md.EURUSD.tick") == ("ticks", "all", "eurusd", "md")
    assert idx.lookup("md.GBPUSD.tick") == ("ticks", "all", "md")
    assert idx.lookup("md") == ("all",)
    assert idx.lookup("other.x") == ("all",)
    assert len(idx) == 4
    assert idx.patterns() == ["md.*.tick", ">", "md.EURUSD.tick", "md.>"]

    idx.remove(">", "all")
    assert idx.lookup("md.EURUSD.tick") == ("ticks", "eurusd", "md")
    with pytest.raises(KeyError):
        idx.remove(">", "all")
    with pytest.raises(KeyError):
        idx.remove("md.*.tick", "nope")
    with pytest.raises(KeyError):
        idx.remove("never.added", "x")
    with pytest.raises(SubjectError):
        idx.add("a..b", "x")
    with pytest.raises(SubjectError):
        idx.lookup("md.*.tick")
    assert len(idx) == 3


def test_index_duplicate_registrations_and_pruning() -> None:
    idx: SubjectIndex[int] = SubjectIndex()
    idx.add("a.b", 1)
    idx.add("a.b", 1)
    assert idx.lookup("a.b") == (1, 1)
    assert idx.patterns() == ["a.b"]
    idx.remove("a.b", 1)
    assert idx.lookup("a.b") == (1,)
    idx.remove("a.b", 1)
    assert idx.lookup("a.b") == ()
    assert idx.patterns() == [] and len(idx) == 0
    assert idx._root.empty()


def test_index_cache_is_bounded() -> None:
    idx: SubjectIndex[int] = SubjectIndex(cache_size=10)
    idx.add(">", 1)
    for i in range(25):
        assert idx.lookup(f"s.{i}") == (1,)
        assert len(idx._cache) <= 10


# --- properties -------------------------------------------------------------------------

_TOKEN_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ".*>{}")
LITERALS = ["a", "b", "c"]

literal = st.one_of(st.sampled_from(LITERALS), st.text(_TOKEN_CHARS, min_size=1, max_size=4))
subjects = st.lists(literal, min_size=1, max_size=6).map(".".join)


@st.composite
def patterns(draw: st.DrawFn, alphabet: st.SearchStrategy[str] = literal, max_size: int = 6) -> str:
    toks = draw(st.lists(st.one_of(alphabet, st.just("*")), min_size=0, max_size=max_size))
    if not toks or draw(st.booleans()):
        toks = [*toks[: max_size - 1], ">"]
    return ".".join(toks)


small_literal = st.sampled_from(LITERALS)
small_patterns = patterns(small_literal, max_size=3)
small_subjects = st.lists(small_literal, min_size=1, max_size=4).map(".".join)

# Every subject of up to 4 tokens over {a, b, c, z}: enough to witness any intersection of,
# or any counterexample to covering between, patterns of up to 3 tokens over {a, b, c}.
UNIVERSE = [
    ".".join(t) for n in range(1, 5) for t in itertools.product([*LITERALS, "z"], repeat=n)
]


def reference_regex(pattern: str) -> re.Pattern[str]:
    tok = r"[^.]+"
    parts = [
        rf"{tok}(?:\.{tok})*" if t == ">" else tok if t == "*" else re.escape(t)
        for t in pattern.split(".")
    ]
    return re.compile(r"\.".join(parts))


@given(patterns(), subjects)
def test_matches_agrees_with_regex(pattern: str, subject: str) -> None:
    assert matches(pattern, subject) == bool(reference_regex(pattern).fullmatch(subject))


@given(small_patterns, small_subjects)
def test_matches_agrees_with_regex_dense(pattern: str, subject: str) -> None:
    assert matches(pattern, subject) == bool(reference_regex(pattern).fullmatch(subject))


@given(subjects)
def test_valid_subject_matches_itself(subject: str) -> None:
    assert check_subject(subject) is None
    assert check_pattern(subject) is None
    assert not is_wildcard(subject)
    assert matches(subject, subject)
    assert covers(subject, subject)
    assert matches(">", subject)


@given(st.text(max_size=12))
def test_check_never_crashes_and_explains(text: str) -> None:
    for check in (check_subject, check_pattern):
        reason = check(text)
        assert reason is None or (reason and not reason.startswith("malformed"))
    if check_subject(text) is None:
        assert check_pattern(text) is None


@given(patterns(), patterns(), subjects)
def test_intersects_symmetric_and_sound(a: str, b: str, subject: str) -> None:
    assert intersects(a, b) == intersects(b, a)
    assert intersects(a, a)
    if matches(a, subject) and matches(b, subject):
        assert intersects(a, b)


@given(small_patterns, small_patterns)
def test_intersects_exact(a: str, b: str) -> None:
    witness = any(matches(a, s) and matches(b, s) for s in UNIVERSE)
    assert intersects(a, b) == witness


@given(patterns(), patterns(), subjects)
def test_covers_implies_matches(general: str, specific: str, subject: str) -> None:
    assert covers(general, general)
    if covers(general, specific):
        assert intersects(general, specific)
        if matches(specific, subject):
            assert matches(general, subject)


@given(small_patterns, small_patterns)
def test_covers_exact(general: str, specific: str) -> None:
    expected = all(matches(general, s) for s in UNIVERSE if matches(specific, s))
    assert covers(general, specific) == expected


@settings(max_examples=60)
@given(
    st.lists(st.tuples(small_patterns, st.integers(0, 3)), max_size=12),
    st.lists(st.integers(0, 11), max_size=4),
    st.lists(small_subjects, min_size=1, max_size=8),
)
def test_index_lookup_equals_brute_force(
    regs: list[tuple[str, int]], removals: list[int], probes: list[str]
) -> None:
    idx: SubjectIndex[int] = SubjectIndex()
    live: list[tuple[str, int]] = []
    for pattern, value in regs:
        idx.add(pattern, value)
        live.append((pattern, value))
    for probe in probes:
        idx.lookup(probe)
    for r in removals:
        if r < len(live):
            pattern, value = live[r]
            idx.remove(pattern, value)
            live.remove((pattern, value))
    assert len(idx) == len(live)
    assert sorted(idx.patterns()) == sorted({p for p, _ in live})
    for probe in probes:
        expected = tuple(v for p, v in live if matches(p, probe))
        assert idx.lookup(probe) == expected
        assert idx.lookup(probe) == expected
