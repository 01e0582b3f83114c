"""Bars judged column by column (:func:`nodes.features.bars.screen_bars`, what feature-engineering-service does with
a chunk of bars) agree with :func:`parse_bar` on every message: a row the columns pass is one parse_bar takes, with
the same values to the bit; ordinary bars all pass; and through the service, a chunk of bars gives the rows, the
dead letters (reasons and messages, in order) and the ignored count of its messages sent one by one."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from framework.chunk import Chunk
from framework.testing import load, make_runtime, recording_bus
from nodes.features.bars import SPREAD_FIELDS, BarError, parse_bar, screen_bars
from nodes.features.synthetic import SyntheticWorld
from tests.test_feature_engineering_node import bar_message

SERVICE = "feature-engineering-service"
NO_MACRO = f"topology.services.{SERVICE}.params.feature_set.groups.macro=null"
TIMEOUT = 120.0

BAD_VALUES: list[Any] = [None, True, False, "1.1", math.nan, math.inf, -math.inf, -1.0, 0, 0.0, 2**70, 1e300, [], {"a": 1}, ""]
"""What a field may hold instead of its value (each where the message's type allows it)."""


def message(rng: np.random.Generator, i: int) -> dict[str, Any]:
    low = 1.0 + float(rng.uniform(0, 0.01))
    high = low + float(rng.uniform(0, 0.01))
    o, c = (float(rng.uniform(low, high)) for _ in range(2))
    return {"symbol": "EURUSD", "timeframe": "1m", "ts": 60_000 * i, "ts_close": 60_000 * (i + 1), "open": o, "high": high, "low": low,
            "close": c, "tick_count": int(rng.integers(0, 50)), "spread_mean": 1e-5, "spread_min": 0.0, "spread_max": 2e-5,
            "complete": True}  # fmt: skip


def mutated(rng: np.random.Generator, i: int) -> dict[str, Any]:
    m = message(rng, i)
    for _ in range(int(rng.integers(0, 3))):
        field = str(rng.choice(list(m)))  # a field still there
        how = rng.integers(0, 4)
        if how == 0:
            del m[field]
        elif how == 1:
            m[field] = BAD_VALUES[int(rng.integers(len(BAD_VALUES)))]
        elif how == 2 and isinstance(m[field], float):
            m[field] = int(m[field]) if rng.integers(2) else m[field] * -1.0
        elif how == 3:
            other = {"symbol": "GBPUSD", "timeframe": "5m", "ts": m.get("ts_close"), "ts_close": m.get("ts"), "low": 2.5, "close": 0.5}
            m[field] = other.get(field, m[field])
    return m


def verdict(m: dict[str, Any]) -> Any:
    try:
        symbol, timeframe, ts, ts_close, values = parse_bar(m)
    except BarError:
        return None
    return symbol, timeframe, ts, ts_close, np.array(values).tobytes()


def test_the_columns_pass_only_what_parse_bar_takes_with_the_same_values() -> None:
    rng = np.random.default_rng(11)
    passed = refused = 0
    for size in [1, 1, 2, 3, 8, 40] * 40:
        messages = [mutated(rng, i) if rng.random() < 0.5 else message(rng, i) for i in range(size)]
        chunk = Chunk.from_rows(messages)
        s = screen_bars(chunk)
        for i, m in enumerate(chunk.rows()):
            assert s.incomplete[i] == (m.get("complete") is False)
            if s.ok[i]:
                got = (s.symbol[i], s.timeframe[i], int(s.ts[i]), int(s.ts_close[i]), s.values[i].tobytes())
                assert got == verdict(m), m
                passed += 1
            else:
                refused += verdict(m) is None
    assert passed > 400 and refused > 300


def test_ordinary_bars_all_pass_whatever_their_number_columns_hold() -> None:
    rng = np.random.default_rng(5)
    messages = [message(rng, i) for i in range(50)]
    messages[3]["tick_count"] = 7.0  # a float among ints: the column is float
    messages[4]["open"] = 1  # an int among floats
    messages[4]["low"] = 1
    for k in (5, 6):
        messages[k]["spread_mean"] = messages[k]["spread_min"] = messages[k]["spread_max"] = None  # downloaded bars have none
    del messages[7]["complete"], messages[7]["spread_max"]
    for chunk in (Chunk.from_rows(messages), Chunk.from_rows(messages[:1])):
        s = screen_bars(chunk)
        assert s.ok.all() and not s.incomplete.any()
        assert [verdict(m)[4] for m in chunk.rows()] == [row.tobytes() for row in s.values]


async def run_service(tmp_path: Path, batches: list[list[dict[str, Any]]]) -> tuple[list[Any], list[Any], int]:
    loaded = load(tmp_path, "pairs=[EURUSD,XAUUSD]", NO_MACRO)
    bus, got = await recording_bus("features.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=[SERVICE])
    await rt.start()
    node = rt.hosts[SERVICE].node
    try:
        for batch in batches:
            await rt.clock.wait_until(max(m["ts_close"] if type(m.get("ts_close")) is int else 0 for m in batch))
            await bus.publish_chunk("bars.EURUSD.1m", Chunk.from_rows(batch))
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    path = tmp_path / "deadletter" / f"{SERVICE}.jsonl"
    letters = [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []
    return got, [(d["reason"], d["payload"]) for d in letters], node.ignored


async def test_a_chunk_of_bars_gives_the_rows_dead_letters_and_ignored_of_its_messages_one_by_one(tmp_path: Path) -> None:
    world = SyntheticWorld(["EURUSD", "XAUUSD"], ["1m", "5m"], 60, seed=4)
    b, b5 = world.bars[("EURUSD", "1m")], world.bars[("EURUSD", "5m")]
    messages = [bar_message("EURUSD", "1m", b, i) for i in range(len(b))]
    messages[5] = {**messages[5], "high": messages[5]["low"] * 0.99}  # not a bar
    messages[9] = {k: v for k, v in messages[9].items() if k != "close"}
    messages[12] = {**messages[12], "complete": False}  # still forming: skipped
    messages[14] = {**messages[14], "symbol": "NZDCAD"}  # not an instrument of the topology
    messages[16] = {**messages[16], "spread_mean": "wide"}  # a text among numbers: no row of that chunk passes the columns
    messages[20] = {**messages[20], "tick_count": -3}
    messages.insert(25, bar_message("EURUSD", "1w", b5, 2))  # a timeframe outside the set: ignored
    messages.insert(30, {**bar_message("EURUSD", "1w", b5, 3), "symbol": None})  # no symbol: dead-lettered, not ignored
    one, one_letters, one_ignored = await run_service(tmp_path / "one", [[m] for m in messages])
    chunked, chunk_letters, chunk_ignored = await run_service(tmp_path / "chunk", [messages[:22], messages[22:]])
    assert [(s, m["ts"]) for s, m in chunked] == [(s, m["ts"]) for s, m in one] and len(one) >= 20
    assert chunked == one
    assert chunk_letters == one_letters and len(one_letters) == 6, one_letters
    assert chunk_ignored == one_ignored


def test_bars_without_any_spread_pass_the_columns() -> None:
    """Downloaded bars have no spreads: columns of None only are absent values, not a reason to go row by row."""
    rng = np.random.default_rng(3)
    messages = [{**message(rng, i), **dict.fromkeys(SPREAD_FIELDS)} for i in range(20)]
    s = screen_bars(Chunk.from_rows(messages))
    assert s.ok.all()
    assert np.isnan(s.values[:, 5:]).all()
