"""The Polygon forex WebSocket client and its simulator, without the runtime."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from framework.clock import WallClock
from nodes.polygon_live.client import (
    AuthError,
    Backoff,
    ConnectionLost,
    Disconnected,
    ForexQuote,
    PolygonForexSocket,
    Reconnected,
    StreamItem,
)
from nodes.polygon_live.simulator import Disconnect, Faults, PolygonSimulator
from nodes.polygon_live.spec import PolygonLiveParams

PAIRS = ["EUR/USD", "XAU/USD"]
TIMEOUT = 20.0
T0 = 1_793_638_800_000
"""Monday 2026-11-02 17:00 UTC, an open hour: fixed, so every run sees the same quotes (with the hour before the
wall clock's, a quiet hour sometimes had too few quotes in the realtime test's two seconds)."""


def client(url: str, key: str = "k", **kw: Any) -> PolygonForexSocket:
    kw.setdefault("backoff", Backoff(0.005, 0.02))
    return PolygonForexSocket(url, key, PAIRS, **kw)


async def drain(c: PolygonForexSocket, limit: int | None = None) -> list[StreamItem]:
    """Everything the stream yields until it ends (or ``limit`` quotes arrived)."""
    items: list[StreamItem] = []
    quotes = 0

    async def consume() -> None:
        nonlocal quotes
        async for item in c.stream():
            items.append(item)
            if isinstance(item, list):
                quotes += len(item)
                if limit is not None and quotes >= limit:
                    return

    await asyncio.wait_for(consume(), TIMEOUT)
    await c.close()
    return items


def quotes_of(items: list[StreamItem]) -> list[ForexQuote]:
    return [q for item in items if isinstance(item, list) for q in item]


# --------------------------------------------------------------------------- back-off


def test_backoff_doubles_up_to_the_cap_and_jitter_only_shortens() -> None:
    exact = Backoff(initial=0.5, maximum=8.0, jitter=0.0)
    assert [exact.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert exact.delay(10_000) == 8.0  # no overflow on a very long outage
    jittered = Backoff(initial=0.5, maximum=8.0, jitter=0.5)
    rng = random.Random(1)
    delays = [jittered.delay(n, rng) for n in range(1, 8) for _ in range(50)]
    bases = [exact.delay(n) for n in range(1, 8) for _ in range(50)]
    assert all(b / 2 <= d <= b for d, b in zip(delays, bases, strict=True))
    assert len(set(delays)) == len(delays)  # spread out, not synchronised


# --------------------------------------------------------------------------- parsing


def test_parse_reads_quotes_skips_status_and_unknown_events_and_reports_bad_ones() -> None:
    c = client("ws://127.0.0.1:1/forex")
    quotes = c.parse(
        '[{"ev":"status","status":"success","message":"subscribed to: C.EUR/USD"},'
        '{"ev":"C","p":"EUR/USD","x":44,"a":1.0851,"b":1.085,"t":1793577600001},'
        '{"ev":"CA","pair":"EUR/USD","o":1,"h":1,"l":1,"c":1,"v":1,"s":1,"e":2},'
        '{"ev":"FMV","fmv":1.08,"sym":"C:EURUSD","t":1},'
        '{"ev":"C","p":"XAU/USD","x":"48","a":2650.5,"b":2650.1,"t":1793577600002.0},'
        '{"ev":"C","p":"XAU/USD","a":2650.5,"b":2650.1,"t":"soon"},'
        '{"ev":"C","b":1.0,"t":1}]'
    )
    assert [(q.pair, q.bid, q.ask, q.ts, q.exchange) for q in quotes] == [
        ("EUR/USD", 1.085, 1.0851, 1793577600001, 44),
        ("XAU/USD", 2650.1, 2650.5, 1793577600002, 48),
    ]
    assert (c.stats.statuses, c.stats.unknown_events, c.stats.unknown_types) == (1, 2, {"CA", "FMV"})
    assert [reason for reason, _ in c._problems] == [
        "quote time 't' is not integer milliseconds: 'soon'",
        "quote event missing field(s): p, a",
    ]


def test_the_key_is_not_in_the_clients_repr() -> None:
    c = PolygonForexSocket("wss://socket.polygon.io/forex", "very-secret-key", PAIRS)
    assert "very-secret-key" not in repr(c) and "socket.polygon.io" in repr(c)


# --------------------------------------------------------------------------- sessions


@pytest.mark.parametrize(("greeting", "auth_reply"), [("connected", "auth_success"), ("success", "success")])
async def test_handshake_accepts_either_greeting_and_both_auth_answers(greeting: str, auth_reply: str) -> None:
    async with PolygonSimulator(["EURUSD", "XAUUSD"], start_ms=T0, end_ms=T0 + 60_000, greeting=greeting, auth_reply=auth_reply) as sim:
        c = client(sim.url, stop_when=lambda: sim.finished)
        items = await drain(c, limit=1)
    assert quotes_of(items) and sim.stats.subscribe_requests == ["C.EUR/USD,C.XAU/USD"]


async def test_rejected_key_raises_auth_error_once_without_the_key() -> None:
    async with PolygonSimulator(["EURUSD"], start_ms=T0, end_ms=T0 + 60_000, api_key="right") as sim:
        c = client(sim.url, key="wrong-f00d")
        with pytest.raises(AuthError, match="rejected the API key: authentication failed") as caught:
            await drain(c)
    assert "wrong-f00d" not in str(caught.value)
    assert (sim.stats.connections, sim.stats.auth_attempts) == (1, 1)


async def test_stream_ends_when_stop_when_says_so_after_the_server_closes() -> None:
    async with PolygonSimulator(["EURUSD", "XAUUSD"], start_ms=T0, end_ms=T0 + 5 * 60_000, close_when_done=True) as sim:
        items = await drain(client(sim.url, stop_when=lambda: sim.finished))
    assert len(quotes_of(items)) == sim.stats.quotes_sent > 0
    assert not any(isinstance(i, (Disconnected, Reconnected)) for i in items)
    assert sim.stats.connections == 1


async def test_reconnects_after_each_drop_until_data_flows_again() -> None:
    faults = Faults(disconnects={0: Disconnect(2), 1: Disconnect(0), 2: Disconnect(0, "force_disconnect")})
    async with PolygonSimulator(["EURUSD", "XAUUSD"], start_ms=T0, end_ms=T0 + 5 * 60_000, faults=faults, close_when_done=True) as sim:
        items = await drain(client(sim.url, stop_when=lambda: sim.finished))
    events = [i for i in items if not isinstance(i, list)]
    forced = "force_disconnect: Connection forcibly disconnected."
    assert events == [  # attempts count the reconnects since data last flowed (connections 1 and 2 brought none)
        Disconnected("connection dropped"), Reconnected("connection dropped", 1),
        Disconnected("connection dropped"), Reconnected("connection dropped", 2),
        Disconnected(forced), Reconnected(forced, 3),
    ]
    assert sim.stats.connections == 4 and sim.stats.auth_attempts == 4
    assert len(quotes_of(items)) == sim.stats.quotes_sent


async def test_gives_up_after_max_reconnects_without_data() -> None:
    faults = Faults(disconnects={n: Disconnect(0) for n in range(10)})
    async with PolygonSimulator(["EURUSD"], start_ms=T0, end_ms=T0 + 60_000, faults=faults) as sim:
        with pytest.raises(ConnectionLost, match="gave up after 2 reconnect attempt"):
            await drain(client(sim.url, max_reconnects=2))
    assert sim.stats.connections == 3


async def test_a_second_connection_kicks_the_first_with_max_connections() -> None:
    async with PolygonSimulator(["EURUSD", "XAUUSD"], start_ms=T0, end_ms=None) as sim:
        first = client(sim.url, max_reconnects=0)
        seen: list[StreamItem] = []

        async def run_first() -> None:
            async for item in first.stream():
                seen.append(item)

        task = asyncio.create_task(run_first())
        await asyncio.wait_for(_until(lambda: any(isinstance(i, list) for i in seen)), TIMEOUT)
        second = client(sim.url)
        await drain(second, limit=1)
        with pytest.raises(ConnectionLost, match="max_connections"):
            await asyncio.wait_for(task, TIMEOUT)
        await first.close()
    assert Disconnected("max_connections: Maximum number of connections exceeded.") in seen


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.005)


async def test_realtime_pacing_stamps_quotes_live() -> None:
    clock = WallClock()
    before = clock.now_ms()
    async with PolygonSimulator(
        ["EURUSD", "XAUUSD"], start_ms=T0, end_ms=T0 + 2_000, mean_interval_ms=100, pace="realtime", close_when_done=True
    ) as sim:
        items = await drain(client(sim.url, stop_when=lambda: sim.finished))
    after = clock.now_ms()
    stamps = [q.ts for q in quotes_of(items)]
    assert len(stamps) > 5
    assert stamps == sorted(stamps)
    assert before <= stamps[0] and stamps[-1] <= after  # re-stamped to the wall clock, not the feed's hour


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    "params",
    [
        {"url": "https://socket.polygon.io/forex"},
        {"backoff_initial": "0s"},
        {"backoff_initial": "2m", "backoff_max": "1m"},
        {"max_reconnects": -1},
        {"max_quote_age": "soon"},
        {"backoff_jitter": 1.5},
        {"simulation": {"start": "yesterday"}},
        {"simulation": {"pace": "slow"}},
        {"apikey": "x"},
    ],
)
def test_bad_params_are_rejected(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PolygonLiveParams.model_validate(params)


def test_defaults_match_the_topology() -> None:
    p = PolygonLiveParams()
    assert (p.api_key_env, p.url, p.simulate, p.max_reconnects) == ("POLYGON_API_KEY", "wss://socket.polygon.io/forex", False, None)


def test_spec_module_stays_light() -> None:
    import subprocess
    import sys

    code = "import sys, nodes.polygon_live.spec; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.strip() == "False"
