"""The Polygon live collector through the real runtime on the demo profile (in-process bus,
embedded ClickHouse for live_ticks, simulated clock), fed by its WebSocket simulator."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pytest

from framework.cli import main as fxrun
from framework.clock import WallClock
from framework.contracts import ContractRegistry
from framework.registry import Registry
from framework.runtime import Runtime
from framework.testing import query
from framework.topology.load import LoadedRun, load_run
from framework.transport.inprocess import InProcessPubSub
from nodes.marketdata.synthetic import Quote, SyntheticQuotes
from nodes.polygon_live.node import MissingApiKey
from nodes.polygon_live.simulator import (
    Disconnect,
    Faults,
    PolygonSimulator,
    frame,
    status,
)
from nodes.polygon_live.spec import SPEC
from tests.transport_helpers import eventually

PROJECT = Path(__file__).resolve().parents[1]
CONTRACTS = ContractRegistry.load(PROJECT / "contracts")
SERVICE = "polygon-live-collector"
TIMEOUT = 30.0
MINUTE = 60_000


T0 = 1_793_638_800_000
"""Monday 2026-11-02 17:00 UTC, an open hour: fixed, so every run sees the same quotes. (The hour before the wall
clock's made counts depend on when the suite ran: the quiet 22:00 hour has too few quotes for the demo test, and in
late hours the injected quote went stale.) The demo profile keeps no TTL (retention off), so its age is harmless."""
T0_ISO = datetime.fromtimestamp(T0 / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
PAIRS = ["EURUSD", "XAUUSD", "USDJPY"]
KEY = "test-key-5f3a9c"
ENV = "POLYGON_API_KEY"


def registry() -> Registry:
    """The installed plugins, plus this one while the editable install predates its entry point."""
    found = Registry.discover()
    if SPEC.name not in found:
        found.register(SPEC)
    return found


def demo(tmp_path: Path, *overrides: str) -> LoadedRun:
    return load_run(
        # the demo profile runs the collector against its built-in simulator; these tests choose per test
        ["topology=demo", f"data_dir={tmp_path}", f"topology.services.{SERVICE}.enabled=true",
         f"~topology.services.{SERVICE}.params", *overrides],
        PROJECT,
    )


def params(**values: Any) -> list[str]:
    """Hydra overrides for the service's params (``++`` sets a key whether the profile has it or not)."""
    out = []
    for key, value in values.items():
        text = f"'{value}'" if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
        out.append(f"++topology.services.{SERVICE}.params.{key}={text}")
    return out


def runtime(loaded: LoadedRun, tmp_path: Path, bus: InProcessPubSub, only: list[str] | None = None, pairs: list[str] | None = None) -> Runtime:
    return Runtime(
        loaded.topology, registry(), CONTRACTS, pairs=pairs or PAIRS, only=only or [SERVICE], data_dir=tmp_path, pubsub=bus
    )


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, subject: str, payload: dict[str, Any], headers: Any) -> None:
        self.got.append((subject, payload))

    def on(self, prefix: str) -> list[tuple[str, dict[str, Any]]]:
        return [(s, p) for s, p in self.got if s.startswith(prefix)]

    @property
    def ticks(self) -> list[dict[str, Any]]:
        return [p for s, p in self.got if s.startswith("ticks.")]

    @property
    def gaps(self) -> list[dict[str, Any]]:
        return [p for s, p in self.got if s.startswith("gaps.")]


async def recording_bus() -> tuple[InProcessPubSub, Recorder]:
    bus = InProcessPubSub()
    await bus.connect()
    recorder = Recorder()
    await bus.subscribe("ticks.>", recorder)
    await bus.subscribe("gaps.>", recorder)
    return bus, recorder


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "deadletter" / f"{SERVICE}.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def as_tick(q: Quote) -> tuple[str, int, float, float]:
    return (q.symbol, q.ts, q.bid, q.ask)


async def collect(tmp_path: Path, sim: PolygonSimulator, expected: Callable[[Recorder], bool], *overrides: str, **kw: Any) -> tuple[Runtime, Recorder]:
    """Run the collector against ``sim`` until ``expected`` holds, then stop the runtime."""
    loaded = demo(tmp_path, *params(url=sim.url, backoff_initial="10ms", backoff_max="50ms"), *overrides)
    bus, recorder = await recording_bus()
    rt = runtime(loaded, tmp_path, bus, **kw)
    await rt.start()
    try:
        await eventually(lambda: sim.finished and expected(recorder), "the feed to reach the bus", timeout=TIMEOUT)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    return rt, recorder


def metrics(rt: Runtime) -> dict[str, Any]:
    return {m["service"]: m for m in rt.metrics()}[SERVICE]


# --------------------------------------------------------------------------- round trip


def consecutive_per_symbol(ticks: list[dict]) -> bool:
    """Each symbol's ticks numbered 1, 2, 3, … in the order they were published."""
    by_symbol: dict[str, list[int]] = {}
    for t in ticks:
        by_symbol.setdefault(t["symbol"], []).append(t["seq"])
    return bool(by_symbol) and all(seqs == list(range(1, len(seqs) + 1)) for seqs in by_symbol.values())


async def test_quotes_reach_nats_subjects_and_live_ticks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, KEY)
    async with PolygonSimulator(PAIRS, start_ms=T0, end_ms=T0 + 10 * MINUTE, api_key=KEY) as sim:
        rt, rec = await collect(tmp_path, sim, lambda r: len(r.ticks) == sim.stats.quotes_sent)

    sent = sim.stats.sent
    assert len(sent) > 150 and {q.symbol for q in sent} == set(PAIRS)
    assert sim.stats.auth_attempts == 1 and sim.stats.connections == 1
    assert sim.stats.subscribe_requests == ["C.EUR/USD,C.XAU/USD,C.USD/JPY"]
    assert [(t["symbol"], t["ts"], t["bid"], t["ask"]) for t in rec.ticks] == [as_tick(q) for q in sent]
    assert [s for s, _ in rec.on("ticks.")] == [f"ticks.{q.symbol}" for q in sent]
    assert consecutive_per_symbol(rec.ticks)
    assert all(t["source"] == "polygon" and CONTRACTS.resolve("tick.v1").validate(t) is None for t in rec.ticks)
    assert rec.gaps == []

    rows = await query(tmp_path, "SELECT symbol, ts, bid, ask, source, seq FROM live_ticks ORDER BY ts, symbol, seq")
    # the table's order: by time, then symbol (two pairs may quote in the same millisecond, sent in either order)
    assert [(r["symbol"], r["ts"], r["bid"], r["ask"]) for r in rows] == sorted((as_tick(q) for q in sent), key=lambda t: (t[1], t[0]))
    assert {r["source"] for r in rows} == {"polygon"}
    m = metrics(rt)
    assert (m["in"], m["out"], m["dead_lettered"], m["errors"]) == (len(sent), len(sent), 0, 0)
    assert dead_letters(tmp_path) == []


async def test_pairs_are_normalised_and_others_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, KEY)
    t = T0 + 30_000
    odd = frame(
        {"ev": "C", "p": "GBP/USD", "x": 48, "a": 1.26501, "b": 1.26495, "t": t},  # not in pairs: ignored
        {"ev": "C", "p": "EUR/USD", "x": "44", "a": 1.08512, "b": 1.08505, "t": t},  # x as a string
        {"ev": "C", "p": "XAU/USD", "a": 2650.4, "b": 2650.1, "t": t},  # no x at all
    )
    faults = Faults(inject={3: [odd]})
    async with PolygonSimulator(["EURUSD", "XAUUSD"], start_ms=T0, end_ms=T0 + 2 * MINUTE, api_key=KEY, faults=faults) as sim:
        rt, rec = await collect(tmp_path, sim, lambda r: len(r.ticks) == sim.stats.quotes_sent + 2, pairs=["EURUSD", "XAUUSD"])

    assert sim.stats.subscribe_requests == ["C.EUR/USD,C.XAU/USD"]
    injected = [(s, p) for s, p in rec.on("ticks.") if p["ts"] == t and p["bid"] in (1.08505, 2650.1)]
    assert [(s, p["symbol"]) for s, p in injected] == [("ticks.EURUSD", "EURUSD"), ("ticks.XAUUSD", "XAUUSD")]
    assert all(p["symbol"] in ("EURUSD", "XAUUSD") for p in rec.ticks)
    assert metrics(rt)["in"] == sim.stats.quotes_sent + 3 and metrics(rt)["dead_lettered"] == 0


# --------------------------------------------------------------------------- keys


async def test_rejected_key_is_one_clear_error_without_the_key_and_no_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-key-8d21e7"
    monkeypatch.setenv(ENV, wrong)
    caplog.set_level(logging.DEBUG)
    async with PolygonSimulator(PAIRS, start_ms=T0, end_ms=T0 + MINUTE, api_key=KEY) as sim:
        loaded = demo(tmp_path, *params(url=sim.url, backoff_initial="10ms"))
        bus, rec = await recording_bus()
        rt = runtime(loaded, tmp_path, bus)
        await asyncio.wait_for(rt.run(), TIMEOUT)  # the only source gives up, so the run ends

    assert (sim.stats.connections, sim.stats.auth_attempts, sim.stats.auth_rejected) == (1, 1, 1)
    assert sim.stats.subscribe_requests == [] and rec.got == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("rejected the API key" in e and ENV in e for e in errors), errors
    assert wrong not in caplog.text
    m = metrics(rt)
    assert m["errors"] == 1 and "rejected the API key" in m["last_error"] and wrong not in m["last_error"]


async def test_missing_key_in_live_mode_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FXFLOW_TEST_NO_SUCH_KEY", raising=False)
    loaded = demo(tmp_path, *params(api_key_env="FXFLOW_TEST_NO_SUCH_KEY"))
    bus, _ = await recording_bus()
    rt = runtime(loaded, tmp_path, bus)
    with pytest.raises(MissingApiKey, match="environment variable FXFLOW_TEST_NO_SUCH_KEY is not set"):
        await asyncio.wait_for(rt.run(), TIMEOUT)


def test_missing_key_is_one_line_from_fxrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FXFLOW_TEST_NO_SUCH_KEY", raising=False)
    found = registry()
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls, *args: found))
    code = fxrun(
        ["topology=demo", f"data_dir={tmp_path}", f"only=[{SERVICE}]", "pairs=[EURUSD]", f"topology.services.{SERVICE}.enabled=true",
         f"~topology.services.{SERVICE}.params", *params(api_key_env="FXFLOW_TEST_NO_SUCH_KEY")]
    )
    err = capsys.readouterr().err
    assert code != 0
    lines = [line for line in err.splitlines() if "FXFLOW_TEST_NO_SUCH_KEY" in line]
    assert len(lines) == 1 and "is not set" in lines[0]
    assert "Traceback" not in err


# --------------------------------------------------------------------------- reconnects and gaps


@pytest.mark.parametrize(
    ("disconnect", "reason"),
    [(Disconnect(6), "reconnect: connection dropped"), (Disconnect(4, "max_connections"), "reconnect: max_connections")],
)
async def test_reconnect_resubscribes_publishes_gaps_and_ticks_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disconnect: Disconnect, reason: str
) -> None:
    monkeypatch.setenv(ENV, KEY)
    faults = Faults(disconnects={0: disconnect}, lost_on_disconnect_ms=45_000)
    async with PolygonSimulator(PAIRS, start_ms=T0, end_ms=T0 + 10 * MINUTE, api_key=KEY, faults=faults) as sim:
        rt, rec = await collect(tmp_path, sim, lambda r: len(r.ticks) == sim.stats.quotes_sent)

    assert sim.stats.connections == 2 and sim.stats.auth_attempts == 2
    assert sim.stats.subscribe_requests == ["C.EUR/USD,C.XAU/USD,C.USD/JPY"] * 2
    first_after = disconnect.after_frames * sim.events_per_frame  # the first quote of the second connection
    before, after = rec.ticks[:first_after], rec.ticks[first_after:]
    assert before and after, "ticks resume after the reconnect"
    assert after[0]["ts"] - before[-1]["ts"] >= 45_000  # the feed time lost while away

    gaps = rec.on("gaps.")
    assert sorted(s for s, _ in gaps) == sorted(f"gaps.ticks.{p}" for p in PAIRS)
    for _, gap in gaps:
        last = max((t["ts"] for t in before if t["symbol"] == gap["symbol"]), default=before[-1]["ts"])
        assert (gap["start_ts"], gap["end_ts"]) == (last, after[0]["ts"])
        assert gap["source"] == "polygon" and gap["reason"].startswith(reason)
        assert CONTRACTS.resolve("data_gap.v1").validate(gap) is None
    order = [s.split(".")[0] for s, _ in rec.got]  # the markers come just before the first tick after
    assert order == ["ticks"] * len(before) + ["gaps"] * len(PAIRS) + ["ticks"] * len(after)
    assert consecutive_per_symbol(rec.ticks)
    assert metrics(rt)["out"] == len(rec.ticks) + len(PAIRS)


async def test_dead_link_is_detected_by_the_heartbeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, KEY)
    faults = Faults(silent={0: 3})
    async with PolygonSimulator(PAIRS, start_ms=T0, end_ms=T0 + 3 * MINUTE, api_key=KEY, faults=faults) as sim:
        _, rec = await collect(tmp_path, sim, lambda r: len(r.ticks) == sim.stats.quotes_sent, *params(heartbeat="200ms"))
    assert sim.stats.connections == 2
    assert len(rec.gaps) == len(PAIRS) and all("No PONG" in g["reason"] for g in rec.gaps)


# --------------------------------------------------------------------------- bad input


async def test_malformed_frames_and_bad_quotes_are_dead_lettered_while_good_ticks_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, KEY)
    inject_at = 4  # data frames of 10 quotes each come before the injected ones
    t = list(islice(SyntheticQuotes(PAIRS).between(T0, T0 + 10 * MINUTE), inject_at * 10))[-1].ts  # the feed's time there
    bad_quotes = (
        '[{"ev":"C","p":"EUR/USD","x":48,"a":1.0850,"b":1.0860,"t":%d},'  # crossed
        '{"ev":"C","p":"EUR/USD","x":48,"a":1.0850,"b":0,"t":%d},'  # zero bid
        '{"ev":"C","p":"EUR/USD","x":48,"a":NaN,"b":1.0850,"t":%d},'  # NaN ask
        '{"ev":"C","p":"EUR/USD","x":48,"a":1.0851,"b":1.0850,"t":%d},'  # stale: 5 minutes old
        '{"ev":"status","status":"success","message":"subscribed to: C.EUR/USD"},'
        '{"ev":"CA","pair":"EUR/USD","o":1.1,"h":1.2,"l":1.0,"c":1.1,"v":3,"s":%d,"e":%d},'  # not subscribed: skipped
        '{"ev":"C","p":"EUR/USD","x":48,"a":1.0851,"b":1.0850,"t":%d}]'  # good
    ) % (t, t, t, t - 5 * MINUTE, t, t + MINUTE, t)
    faults = Faults(
        inject={inject_at: ["not json {", frame(status("success", "x"))[1:-1], '[{"ev":"C","p":"EUR/USD"}, 42, {"p":"EUR/USD"}]', bad_quotes]},
        crossed_every=37,
    )
    async with PolygonSimulator(PAIRS, start_ms=T0, end_ms=T0 + 10 * MINUTE, api_key=KEY, faults=faults) as sim:
        rt, rec = await collect(tmp_path, sim, lambda r: len(r.ticks) == sim.stats.quotes_sent - len(sim.stats.crossed) + 1)

    crossed = sim.stats.crossed
    assert crossed
    good = [q for q in sim.stats.sent if q not in crossed]
    published = [(p["symbol"], p["ts"], p["bid"], p["ask"]) for p in rec.ticks]
    assert sorted(published) == sorted([as_tick(q) for q in good] + [("EURUSD", t, 1.085, 1.0851)])

    letters = dead_letters(tmp_path)
    reasons = [d["reason"] for d in letters]
    expected_prefixes = [
        "frame is not JSON",
        "frame is not a JSON array but dict",
        "quote event missing field(s): a, b, t",
        "event is not a JSON object but int",
        "event has no 'ev' field",
        "crossed quote: ask 1.085 < bid 1.086",
        "bid is not positive: 0",
        "ask is nan",
        "stale quote: 300000 ms old (limit 60000 ms)",
    ]
    for prefix in expected_prefixes:
        assert sum(r.startswith(prefix) for r in reasons) == 1, (prefix, reasons)
    feed_crossed = [d for d in letters if d["reason"].startswith("crossed quote") and d["payload"]["b"] != 1.086]
    assert [(d["payload"]["t"], d["payload"]["b"], d["payload"]["a"]) for d in feed_crossed] == [(q.ts, q.bid, q.ask) for q in crossed]
    assert len(letters) == len(expected_prefixes) + len(crossed)
    assert all(d["service"] == SERVICE and d["origin"].startswith("polygon:") for d in letters)
    assert next(d for d in letters if d["reason"].startswith("frame is not JSON"))["payload"] == "not json {"
    assert next(d for d in letters if d["reason"] == "ask is nan")["payload"]["b"] == 1.085
    m = metrics(rt)
    assert m["dead_lettered"] == len(letters) and m["errors"] == 0
    assert not any(math.isnan(p["ask"]) or p["bid"] <= 0 or p["ask"] < p["bid"] for p in rec.ticks)


# --------------------------------------------------------------------------- the demo: simulate on the simulated clock


async def test_simulate_runs_the_demo_pipeline_on_the_simulated_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)  # simulate: any key works, none is needed
    loaded = demo(
        tmp_path,
        *params(simulate=True),
        f"++topology.services.{SERVICE}.params.simulation.start='{T0_ISO}'",
        f"++topology.services.{SERVICE}.params.simulation.duration=15m",
    )
    bus, rec = await recording_bus()
    rt = runtime(loaded, tmp_path, bus, only=[SERVICE, "spread-watch"])
    await asyncio.wait_for(rt.run(), TIMEOUT)  # ends by itself when the simulated feed is over

    ticks = rec.ticks
    m = {s["service"]: s for s in rt.metrics()}
    assert len(ticks) > 500 and m[SERVICE]["out"] == len(ticks) and rt.hosts[SERVICE].finished
    assert {t["symbol"] for t in ticks} == set(PAIRS)
    times = [t["ts"] for t in ticks]
    assert times == sorted(times) and T0 <= times[0] and times[-1] < T0 + 15 * MINUTE
    assert m["spread-watch"]["in"] == len(ticks)
    assert rt.clock.now_ms() >= times[-1]
    stats = await query(tmp_path, "SELECT symbol, ts, ticks FROM tick_stats")
    assert sum(r["ticks"] for r in stats) == len(ticks)  # spread-watch's 1-minute timer ran on the feed's time
    assert len({r["ts"] for r in stats}) >= 14 and all(T0 <= r["ts"] < T0 + 15 * MINUTE for r in stats)
    rows = await query(tmp_path, "SELECT count() AS n FROM live_ticks")
    assert rows[0]["n"] == len(ticks)


async def test_simulate_on_a_simulated_clock_needs_a_start(tmp_path: Path) -> None:
    loaded = demo(tmp_path, *params(simulate=True))
    bus, _ = await recording_bus()
    rt = runtime(loaded, tmp_path, bus)
    with pytest.raises(Exception, match="params.simulation.start is required"):
        await asyncio.wait_for(rt.run(), TIMEOUT)


async def test_simulate_on_the_wall_clock_paces_in_real_time_and_stamps_quotes_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    loaded = demo(
        tmp_path,
        *params(simulate=True, max_quote_age="5s"),
        f"++topology.services.{SERVICE}.params.simulation.start='{T0_ISO}'",  # an open hour, replayed as live
        f"++topology.services.{SERVICE}.params.simulation.duration=2s",
        f"++topology.services.{SERVICE}.params.simulation.mean_interval_ms=100",
    )
    bus, rec = await recording_bus()
    clock = WallClock()
    rt = Runtime(loaded.topology, registry(), CONTRACTS, pairs=PAIRS, only=[SERVICE], data_dir=tmp_path, pubsub=bus, clock=clock)
    started = clock.now_ms()
    await asyncio.wait_for(rt.run(), TIMEOUT)
    ended = clock.now_ms()

    times = [t["ts"] for t in rec.ticks]
    assert len(times) > 5 and times == sorted(times)
    assert started <= times[0] and times[-1] <= ended  # live stamps, none stale against the 5 s limit
    assert metrics(rt)["dead_lettered"] == 0


async def test_a_realtime_feed_with_a_fixed_window_resumes_inside_its_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Realtime pace stamps quotes with the wall clock; the position a restart resumes from stays in the feed's window."""
    monkeypatch.delenv(ENV, raising=False)
    position = tmp_path / "services" / SERVICE / "simulation-position.json"
    runs = []
    for duration in ("2s", "4s"):  # the second run continues the window with its next two seconds
        loaded = demo(
            tmp_path,
            *params(simulate=True, max_quote_age="5s"),
            f"++topology.services.{SERVICE}.params.simulation.start='{T0_ISO}'",
            f"++topology.services.{SERVICE}.params.simulation.duration={duration}",
            f"++topology.services.{SERVICE}.params.simulation.mean_interval_ms=100",
        )
        bus, rec = await recording_bus()
        rt = Runtime(loaded.topology, registry(), CONTRACTS, pairs=PAIRS, only=[SERVICE], data_dir=tmp_path, pubsub=bus, clock=WallClock())
        await asyncio.wait_for(rt.run(), TIMEOUT)
        reached = json.loads(position.read_text())["last_ts"]
        runs.append((rec.ticks, reached))
    (first, after_first), (second, after_second) = runs
    assert first and second, "the second run sends the window's next seconds"
    assert all(T0 <= ts < T0 + 2_000 for ts in after_first.values())
    assert all(T0 + 2_000 <= ts < T0 + 4_000 for ts in after_second.values())
    assert min(t["ts"] for t in second) > max(t["ts"] for t in first)


async def test_seq_keeps_growing_across_runs_of_the_same_data_dir(tmp_path: Path) -> None:
    runs = []
    for duration in ("1m", "2m"):  # the second run resumes the feed and publishes its second minute
        overrides = (
            *params(simulate=True),
            f"++topology.services.{SERVICE}.params.simulation.start='{T0_ISO}'",
            f"++topology.services.{SERVICE}.params.simulation.duration={duration}",
        )
        bus, rec = await recording_bus()
        await asyncio.wait_for(runtime(demo(tmp_path, *overrides), tmp_path, bus).run(), TIMEOUT)
        runs.append(rec.ticks)
    first, second = runs
    assert consecutive_per_symbol(first) and second
    for symbol in {t["symbol"] for t in second}:  # a clean stop: the next run continues each symbol's numbers
        seqs = [t["seq"] for t in second if t["symbol"] == symbol]
        start = 1 + max((t["seq"] for t in first if t["symbol"] == symbol), default=0)
        assert seqs == list(range(start, start + len(seqs)))
