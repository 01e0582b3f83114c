"""A chunk of bars through :meth:`StreamingEngine.on_bars` gives what :meth:`StreamingEngine.on_bar` gives bar by
bar in the same order: the same rows, bit for bit, in the same order, from the same bars, and the same counters,
whatever the chunks' boundaries; over several symbols (gold among them) and timeframes, from an empty engine (a
backtest's warm-up) or a primed one, with revisions, late bars and repeated bars mixed in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from nodes.features import engine as engine_module
from nodes.features.bars import Bars
from nodes.features.engine import BarInput, Batch, History, StreamingEngine
from nodes.features.featureset import FeatureSetParams
from nodes.features.synthetic import SyntheticWorld
from tests.test_features_support import bar_values, feed, resolved, small_params, world

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ["EURUSD", "USDJPY", "GBPUSD", "XAUUSD"]
Tape = list[tuple[str, Any]]
"""("event", (time, event)) or ("bar", BarInput), in the order they arrive."""


def backtest_set(**update: Any) -> FeatureSetParams:
    """The feature set of topology=backtest (its light set: crosspair, session and calendar joins, no context)."""
    doc = yaml.safe_load((ROOT / "topology" / "backtest.yaml").read_text())["services"]["feature-engineering-service"]["params"]["feature_set"]
    return FeatureSetParams.model_validate({**doc, **update})


def core_set() -> FeatureSetParams:
    """Every group of the core set (small W and B), context of 1m from 5m and 15m and of 5m from 15m."""
    doc = small_params().model_dump()
    doc["groups"]["context"]["timeframes"] = {"1m": ["5m", "15m"], "5m": ["15m"], "15m": []}
    return FeatureSetParams.model_validate(doc)


def sometimes_undefined(b: Bars) -> np.ndarray:
    """A planted feature, infinite or NaN at some minutes: those rows are withheld."""
    out = np.zeros(len(b))
    out[(b.ts // 60_000) % 37 == 0] = np.inf
    out[(b.ts // 60_000) % 41 == 0] = np.nan
    return out


CASES = {
    # name: (set, timeframes, bars of each stream in the world, the feed starts after this many 1st-timeframe bars
    # (None: from nothing, as a backtest), planted features)
    "backtest set from nothing": (backtest_set, ["5m", "15m"], 330, None, {}),
    "backtest set, block of 1, a feature dropped": (
        lambda: backtest_set(block=1, drop=["ret_2"]), ["1m", "5m"], 200, None, {"poison": sometimes_undefined}
    ),
    "core set primed": (core_set, ["1m", "5m", "15m"], 900, 500, {"poison": sometimes_undefined}),
}


def tape(w: SyntheticWorld, full: History, after: int, seed: int) -> Tape:
    """What becomes known after ``after`` in the order it does, then: some bars revised later (other high
    and close), some arriving late (after other bars of their stream), some sent twice."""
    rng = np.random.default_rng(seed)
    items: Tape = []
    for t, kind, payload in feed(w, full, after, seed):
        if kind == "event":
            items.append(("event", (t, payload)))
        else:
            symbol, tf, i = payload
            b = full.bars[(symbol, tf)]
            items.append(("bar", (symbol, tf, int(b.ts[i]), int(b.ts_close[i]), bar_values(b, i))))
    bars = [k for k, (kind, _) in enumerate(items) if kind == "bar"]
    later: list[tuple[int, tuple[str, Any]]] = []
    for k in rng.choice(bars, size=len(bars) // 60, replace=False).tolist():
        symbol, tf, ts, ts_close, values = items[k][1]
        revised = list(values)
        revised[1] *= 1.0 + float(rng.uniform(1e-4, 1e-3))  # the high
        revised[3] = min(revised[3] * (1.0 + float(rng.uniform(-5e-4, 5e-4))), revised[1])  # the close
        revised[3] = max(revised[3], revised[2])
        later.append((k + int(rng.integers(1, 300)), ("bar", (symbol, tf, ts, ts_close, tuple(revised)))))
    for k in rng.choice(bars, size=len(bars) // 100, replace=False).tolist():
        later.append((k + int(rng.integers(1, 200)), items[k]))  # the same bar again
    late = set(rng.choice(bars, size=len(bars) // 80, replace=False).tolist())
    for k in late:
        later.append((k + int(rng.integers(1, 400)), items[k]))  # missing from its place, then late (or too old)
    slots: dict[int, list[tuple[str, Any]]] = {}
    for at, item in later:
        slots.setdefault(at, []).append(item)
    out: Tape = []
    for k, item in enumerate(items):
        if k not in late:
            out.append(item)
        out.extend(slots.pop(k, []))
    for k in sorted(slots):
        out.extend(slots[k])
    return out


def per_bar(engine: StreamingEngine, items: Tape) -> list[tuple[Any, ...]]:
    """Each bar through on_bar: (the bar's position, symbol, timeframe, ts, revised, the values' bytes) of every row."""
    got: list[tuple[Any, ...]] = []
    for k, (kind, item) in enumerate(items):
        if kind == "event":
            engine.add_event(item[1], item[0])
            continue
        got.extend((k, r.symbol, r.timeframe, r.ts, r.revised, r.values.tobytes()) for r in engine.on_bar(*item))
    return got


def chunked(engine: StreamingEngine, items: Tape, cut: float, seed: int) -> list[tuple[Any, ...]]:
    """The bars through on_bars, in chunks ending at every event and, at random, after a share ``cut`` of the bars."""
    rng = np.random.default_rng(seed)
    got: list[tuple[Any, ...]] = []
    chunk: list[BarInput] = []
    first = 0

    def flush(k: int) -> None:
        nonlocal chunk, first
        if chunk:
            got.extend((first + r.bar, r.symbol, r.timeframe, r.ts, r.revised, r.values.tobytes()) for r in engine.on_bars(chunk))
        chunk, first = [], k

    for k, (kind, item) in enumerate(items):
        if kind == "event":
            flush(k + 1)
            engine.add_event(item[1], item[0])
            continue
        if not chunk:
            first = k
        chunk.append(item)
        if rng.random() < cut:
            flush(k + 1)
    flush(len(items))
    return got


def engines(name: str, seed: int) -> tuple[StreamingEngine, StreamingEngine, Tape]:
    """Two engines in the same state and the tape that follows it."""
    params, timeframes, count, primed, extra = CASES[name]
    fs = resolved(params(), symbols=SYMBOLS, timeframes=timeframes, **extra)
    w = world(fs, SYMBOLS, count, seed=seed)
    g = fs.params.groups
    full = w.history(g.events, g.macro)
    first = full.bars[(SYMBOLS[0], timeframes[0])]
    after = int(first.ts_close[primed]) if primed is not None else int(min(b.ts[0] for b in full.bars.values()))
    pair = []
    for _ in range(2):
        known = w.history(g.events, g.macro, after)
        e = StreamingEngine(fs, known.calendar, known.macro)
        if primed is not None:
            e.prime(known)
        pair.append(e)
    return pair[0], pair[1], tape(w, full, after, seed)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("seed,cut", [(1, 0.0), (2, 0.01), (3, 0.3)])
def test_a_chunk_gives_the_rows_and_counters_of_its_bars_one_by_one(name: str, seed: int, cut: float) -> None:
    one, many, items = engines(name, seed)
    expected = per_bar(one, items)
    got = chunked(many, items, cut, seed)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a == b, f"{a[:5]} != {b[:5]}" + (" (other values)" if a[:5] == b[:5] else "")
    assert many.counters.as_dict() == one.counters.as_dict()
    c = one.counters
    assert len(expected) > 500 and c.revised > 5 and sum(r[4] for r in expected) > 20  # the tape did revise rows
    if CASES[name][3] is None:
        assert c.incomplete > 50  # the warm-up of every stream was withheld
    if CASES[name][4]:
        assert c.nonfinite > 20  # and the rows with an undefined value


def test_closes_that_do_not_increase_give_the_same_rows_as_bar_by_bar() -> None:
    """Bars closing after the next bar of their stream (not bucket ends): the as-of searches over their stream
    then see unsorted closes, and a chunk still gives the rows of its bars one by one."""
    one, many, items = engines("backtest set from nothing", 4)
    rng = np.random.default_rng(4)
    bars = [k for k, (kind, _) in enumerate(items) if kind == "bar"]
    for k in rng.choice(bars, size=len(bars) // 3, replace=False).tolist():
        symbol, tf, ts, ts_close, values = items[k][1]
        items[k] = ("bar", (symbol, tf, ts, ts_close + int(rng.integers(1, 20)) * (ts_close - ts), values))
    assert per_bar(one, items) == chunked(many, items, 0.0, 4)
    assert many.counters.as_dict() == one.counters.as_dict()


@pytest.mark.parametrize("params", [backtest_set, core_set])
def test_chunks_of_one_stream_after_another_give_the_rows_of_their_bars_one_by_one(params: Any) -> None:
    """Chunks as the runtime hands a multi-subject timed chunk to a batch handler: every bar of one (symbol,
    timeframe) of the chunk's span, then every bar of the next, so each stream runs days ahead of the next one
    (their cross-pair inputs, context and calendar, pruned as the newest close moves on, are those known when
    each bar arrives)."""
    fs = resolved(params(), symbols=SYMBOLS, timeframes=["15m", "1h", "4h"])
    w = world(fs, SYMBOLS, 400, seed=6)
    g = fs.params.groups
    full = w.history(g.events, g.macro)
    bars = [(s, tf, int(b.ts[i]), int(b.ts_close[i]), bar_values(b, i)) for (s, tf), b in full.bars.items() for i in range(len(b))]
    span = 12 * 86_400_000
    chunks: dict[int, list[BarInput]] = {}
    for bar in sorted(bars, key=lambda bar: (bar[3] // span, bar[0], bar[1], bar[2])):
        chunks.setdefault(bar[3] // span, []).append(bar)
    one, many = (StreamingEngine(fs, known.calendar, known.macro) for known in (w.history(g.events, g.macro) for _ in range(2)))
    expected: list[tuple[Any, ...]] = []
    got: list[tuple[Any, ...]] = []
    for chunk in chunks.values():
        expected.extend((k, r.symbol, r.timeframe, r.ts, r.values.tobytes()) for k, bar in enumerate(chunk) for r in one.on_bar(*bar))
        got.extend((r.bar, r.symbol, r.timeframe, r.ts, r.values.tobytes()) for r in many.on_bars(chunk))
    assert len(chunks) >= 5 and len(got) > 2000
    assert got == expected
    assert many.counters.as_dict() == one.counters.as_dict()


@pytest.mark.parametrize("params", [backtest_set, lambda: backtest_set(block=1)])
def test_from_nothing_a_chunk_gives_the_batch_rows(params: Any) -> None:
    """A backtest's case (no stored history primes the windows): the first rows come after the warm-up, as the
    batch's over the same bars, bit for bit."""
    fs = resolved(params(), symbols=SYMBOLS, timeframes=["1m", "5m"])
    w = world(fs, SYMBOLS, 300, seed=8)
    g = fs.params.groups
    full = w.history(g.events, g.macro)
    bars = sorted(
        ((s, tf, int(b.ts[i]), int(b.ts_close[i]), bar_values(b, i)) for (s, tf), b in full.bars.items() for i in range(len(b))),
        key=lambda bar: (bar[3], bar[1], bar[0]),
    )  # fmt: skip
    known = w.history(g.events, g.macro)  # the engine's own calendar: it prunes it
    got = {(r.symbol, r.timeframe, r.ts): r.values.tobytes() for r in StreamingEngine(fs, known.calendar, known.macro).on_bars(bars)}
    expected = {}
    for frame in Batch(fs, full).frames():
        for i in np.flatnonzero(frame.valid):
            expected[(frame.symbol, frame.timeframe, int(frame.ts[i]))] = frame.values[i].tobytes()
    assert len(expected) > 1000 and got == expected


def test_a_chunk_is_computed_with_one_kernel_call_per_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = backtest_set().model_dump()
    doc["groups"]["events"] = None  # no calendar: no daily prune (a flush)
    fs = resolved(FeatureSetParams.model_validate(doc), symbols=SYMBOLS, timeframes=["5m", "15m"])
    full = world(fs, SYMBOLS, 330, seed=5).history(None, None)
    bars = sorted(
        ((s, tf, int(b.ts[i]), int(b.ts_close[i]), bar_values(b, i)) for (s, tf), b in full.bars.items() for i in range(len(b))),
        key=lambda bar: (bar[3], bar[1], bar[0]),
    )  # fmt: skip
    calls: list[int] = []
    compute = engine_module.compute

    def counted(*args: Any, **kw: Any) -> None:
        calls.append(len(args[4]))
        compute(*args, **kw)

    monkeypatch.setattr(engine_module, "compute", counted)
    rows = StreamingEngine(fs).on_bars(bars)
    assert len(rows) > 1500 and len(calls) == len(full.bars) == 8
