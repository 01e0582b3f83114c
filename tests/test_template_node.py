"""The template node (spread-watch) and the synthetic tick source, run the way a plugin author tests a node:
through the real runtime on the demo profile (in-process bus, embedded ClickHouse, simulated clock).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from framework.clock import SimulatedClock
from framework.testing import contracts, handled, load, make_runtime, query, recording_bus
from framework.topology.model import Instrument
from nodes.synthetic_ticks.node import SyntheticTicks, in_weekend, weekend_end
from nodes.synthetic_ticks.spec import SyntheticTicksParams
from nodes.template.spec import SpreadWatchParams

PROJECT = Path(__file__).resolve().parents[1]
TIMEOUT = 30.0
START = "2026-11-02T00:00:00Z"  # a Monday
T0 = 1_793_577_600_000
MINUTE = 60_000
HOUR = 60 * MINUTE

CONTRACTS = contracts()


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp() * 1000)


# --------------------------------------------------------------------------- the demo pipeline


async def test_demo_run_writes_tick_stats_and_raises_wide_spread_alerts(tmp_path: Path) -> None:
    loaded = load(tmp_path, "topology.services.synthetic-ticks.enabled=true", "topology.services.synthetic-ticks.params.duration=30m")
    bus, alerts = await recording_bus("risk.alert.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=["synthetic-ticks", "spread-watch"])
    await asyncio.wait_for(rt.run(), TIMEOUT)

    m = {s["service"]: s for s in rt.metrics()}
    assert rt.order == ["synthetic-ticks", "spread-watch"]
    ticks = m["synthetic-ticks"]["out"]
    assert ticks > 0 and m["spread-watch"]["in"] == ticks
    assert m["spread-watch"]["dead_lettered"] == 0 and m["spread-watch"]["errors"] == 0

    rows = await query(tmp_path, "SELECT symbol, ts, ticks, spread_mean_pips, spread_max_pips FROM tick_stats")
    assert sum(r["ticks"] for r in rows) == ticks  # every tick counted once, the last window flushed on stop
    assert {r["symbol"] for r in rows} == set(loaded.topology.instruments)
    per_symbol = Counter(r["symbol"] for r in rows)
    assert all(25 <= n <= 31 for n in per_symbol.values())  # one row per minute of 30 minutes of quotes
    assert all(T0 <= r["ts"] < T0 + 30 * MINUTE for r in rows)
    assert all(0 < r["spread_mean_pips"] <= r["spread_max_pips"] for r in rows)

    assert alerts, "the synthetic feed has spreads above 3 pips"
    assert {subject for subject, _ in alerts} == {"risk.alert.wide_spread"}
    for _, alert in alerts:
        assert alert["type"] == "wide_spread" and alert["source"] == "spread-watch"
        assert alert["value"] > alert["threshold"]
        assert CONTRACTS.resolve("alert.v1").validate(alert) is None
    by_symbol: dict[str, list[int]] = {}
    for _, alert in alerts:
        by_symbol.setdefault(alert["symbol"], []).append(alert["ts"])
    for times in by_symbol.values():  # at most one alert per symbol per 5-minute cooldown
        assert all(b - a >= 5 * MINUTE for a, b in zip(times, times[1:]))
    assert m["spread-watch"]["out"] == len(rows) + len(alerts)


def quote(symbol: str, ts: int, bid: float, spread: float, digits: int = 5) -> dict[str, Any]:
    return {"symbol": symbol, "ts": ts, "bid": bid, "ask": round(bid + spread, digits), "source": "test"}


@pytest.mark.parametrize("transport", ["inprocess", "nats"])
async def test_wide_spread_alert_respects_limits_and_cooldown(tmp_path: Path, transport: str, request: pytest.FixtureRequest) -> None:
    """The same test on the in-process bus and on a real NATS server (framework.testing)."""
    loaded = load(tmp_path)
    url = request.getfixturevalue("nats_server").url if transport == "nats" else None
    bus, alerts = await recording_bus("risk.alert.>", nats=url)
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=["spread-watch"])
    await rt.start()
    try:
        for n, tick in enumerate((
            quote("EURUSD", T0, 1.10000, 0.00010),  # 1 pip: fine
            quote("EURUSD", T0 + 1_000, 1.10000, 0.00050),  # 5 pips > 3: alert
            quote("EURUSD", T0 + MINUTE, 1.10000, 0.00060),  # within the 5-minute cooldown
            quote("XAUUSD", T0 + MINUTE, 2650.00, 0.40, digits=2),  # 40 pips, XAUUSD's limit is 60
            quote("XAUUSD", T0 + 2 * MINUTE, 2650.00, 0.70, digits=2),  # 70 pips: alert
            quote("EURUSD", T0 + 1_000 + 5 * MINUTE, 1.10000, 0.00040),  # cooldown over: alert
        ), 1):
            await rt.clock.wait_until(tick["ts"])  # as a source on the simulated clock does
            await bus.publish(f"ticks.{tick['symbol']}", tick)
            await handled(rt, "spread-watch", n)  # over NATS, before the clock moves on
        node = rt.hosts["spread-watch"].node
        await node.write_stats()
        await rt.writers[("spread-watch", "tick_stats")].flush()
        assert await node.busiest(limit=2) == [{"symbol": "EURUSD", "ticks": 4}, {"symbol": "XAUUSD", "ticks": 2}]
        assert await node.busiest(limit=1) == [{"symbol": "EURUSD", "ticks": 4}]
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)

    got = [(a["symbol"], a["ts"], a["value"], a["threshold"]) for _, a in alerts]
    assert got == [
        ("EURUSD", T0 + 1_000, 5.0, 3.0),
        ("XAUUSD", T0 + 2 * MINUTE, 70.0, 60.0),
        ("EURUSD", T0 + 1_000 + 5 * MINUTE, 4.0, 3.0),
    ]
    assert all(subject == "risk.alert.wide_spread" for subject, _ in alerts)
    rows = await query(tmp_path, "SELECT symbol, ts, ticks, spread_max_pips FROM tick_stats ORDER BY symbol, ts")
    # one row per symbol and minute that had quotes; the last window is flushed on stop
    assert [(r["symbol"], r["ts"], r["ticks"], r["spread_max_pips"]) for r in rows] == [
        ("EURUSD", T0, 2, 5.0),
        ("EURUSD", T0 + MINUTE, 1, 6.0),
        ("EURUSD", T0 + 5 * MINUTE, 1, 4.0),
        ("XAUUSD", T0 + MINUTE, 1, 40.0),
        ("XAUUSD", T0 + 2 * MINUTE, 1, 70.0),
    ]


async def test_tick_with_an_unknown_symbol_is_dead_lettered_not_fatal(tmp_path: Path) -> None:
    loaded = load(tmp_path)
    bus, _ = await recording_bus("risk.alert.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=["spread-watch"], pairs=["EURUSD", "BTCUSD"])
    await rt.start()
    try:
        await bus.publish("ticks.BTCUSD", quote("BTCUSD", T0, 50_000.0, 5.0, digits=2))
        await bus.publish("ticks.EURUSD", quote("EURUSD", T0, 1.1, 0.0001))
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    m = {s["service"]: s for s in rt.metrics()}["spread-watch"]
    assert (m["in"], m["errors"], m["dead_lettered"]) == (2, 1, 1)
    assert (tmp_path / "deadletter" / "spread-watch.jsonl").exists()


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    "params",
    [
        {"max_spread_pips": {"default": -1.0}},
        {"max_spread_pips": {"default": 3.0, "XAUUSD": 0}},
        {"stats_every": "0s"},
        {"cooldown": "soon"},
        {"max_spread": 3.0},
    ],
)
def test_bad_params_are_rejected(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SpreadWatchParams.model_validate(params)


def test_negative_limit_names_the_symbol() -> None:
    with pytest.raises(ValidationError, match="limits must be positive: XAUUSD"):
        SpreadWatchParams.model_validate({"max_spread_pips": {"default": 3.0, "XAUUSD": -60.0}})


async def test_runtime_rejects_bad_params_before_any_node_starts(tmp_path: Path) -> None:
    loaded = load(tmp_path, "topology.services.spread-watch.params.max_spread_pips.default=-1")
    rt = make_runtime(loaded, tmp_path)
    try:
        with pytest.raises(ValidationError, match="limits must be positive"):
            await rt.start()
    finally:
        await rt.stop()
    assert all(h.node is None for h in rt.hosts.values())


# --------------------------------------------------------------------------- synthetic ticks


class _Ctx:
    """The part of NodeContext a source uses: clock, pairs, instruments, publish."""

    def __init__(self, pairs: list[str], instruments: dict[str, Instrument]) -> None:
        self.clock = SimulatedClock()
        self.pairs = pairs
        self.instruments = instruments
        self.published: list[dict[str, Any]] = []

    def instrument(self, symbol: str) -> Instrument:
        return self.instruments[symbol]

    async def publish(self, port: str, message: dict[str, Any]) -> bool:
        assert port == "ticks"
        self.published.append(message)
        return True


INSTRUMENTS = {
    "EURUSD": Instrument(pip=0.0001, digits=5),
    "USDJPY": Instrument(pip=0.01, digits=3),
    "XAUUSD": Instrument(kind="metal", pip=0.01, digits=2),
}


async def synthetic(pairs: list[str] | None = None, **params: Any) -> list[dict[str, Any]]:
    ctx = _Ctx(pairs or ["EURUSD", "XAUUSD"], INSTRUMENTS)
    node = SyntheticTicks(ctx, SyntheticTicksParams(**params))  # type: ignore[arg-type]
    await asyncio.wait_for(node.run(), TIMEOUT)
    return ctx.published


async def test_synthetic_ticks_are_reproducible_for_a_seed() -> None:
    first = await synthetic(seed=3, start=START, duration="20m", mean_interval_ms=1000)
    again = await synthetic(seed=3, start=START, duration="20m", mean_interval_ms=1000)
    other = await synthetic(seed=4, start=START, duration="20m", mean_interval_ms=1000)
    assert len(first) > 1000
    assert first == again
    assert first != other


async def test_synthetic_ticks_are_valid_ordered_and_within_the_span() -> None:
    ticks = await synthetic(["EURUSD", "USDJPY", "XAUUSD"], seed=1, start=START, duration="1h", mean_interval_ms=2000)
    contract = CONTRACTS.resolve("tick.v1")
    assert all(contract.validate(t) is None for t in ticks)
    assert all(t["bid"] < t["ask"] for t in ticks)
    times = [t["ts"] for t in ticks]
    assert times == sorted(times)
    assert T0 <= times[0] and times[-1] < T0 + HOUR
    assert {t["symbol"] for t in ticks} == {"EURUSD", "USDJPY", "XAUUSD"}
    for symbol in ("EURUSD", "USDJPY", "XAUUSD"):  # numbered per symbol (tick.v1: a stream per source and symbol)
        seqs = [t["seq"] for t in ticks if t["symbol"] == symbol]
        assert seqs == list(range(1, len(seqs) + 1))
    assert all(round(t["bid"], 3) == t["bid"] for t in ticks if t["symbol"] == "USDJPY")  # quote precision


async def test_synthetic_ticks_skip_the_fx_weekend() -> None:
    friday_evening = "2026-11-06T21:00:00Z"
    ticks = await synthetic(seed=5, start=friday_evening, duration="3d", mean_interval_ms=60_000)
    times = [t["ts"] for t in ticks]
    close, reopen = ms("2026-11-06T22:00:00Z"), ms("2026-11-08T22:00:00Z")
    assert not any(close <= ts < reopen for ts in times)
    assert any(ts < close for ts in times) and any(ts >= reopen for ts in times)


def test_in_weekend_and_weekend_end() -> None:
    sunday_close = ms("2026-11-08T22:00:00Z")
    assert not in_weekend(ms("2026-11-06T21:59:59.999Z"))  # Friday before the close
    assert in_weekend(ms("2026-11-06T22:00:00Z"))
    assert in_weekend(ms("2026-11-07T12:00:00Z"))  # Saturday
    assert in_weekend(ms("2026-11-08T21:59:59Z"))
    assert not in_weekend(sunday_close)
    assert not in_weekend(ms("2026-11-09T10:00:00Z"))  # Monday
    assert not in_weekend(ms("2026-11-04T23:00:00Z"))  # Wednesday night
    for inside in ("2026-11-06T22:00:00Z", "2026-11-07T12:00:00Z", "2026-11-08T21:59:00Z"):
        assert weekend_end(ms(inside)) == sunday_close
    assert weekend_end(ms("2026-11-14T03:00:00Z")) == ms("2026-11-15T22:00:00Z")  # the next weekend
