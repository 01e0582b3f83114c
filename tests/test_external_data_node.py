"""The external-data collector through the real runtime on the demo profile (in-process bus,
embedded ClickHouse, simulated clock), serving FRED and the calendar from its simulator.

The topology gives the service three ports (calendar, fred, commodities), each with its own
subject, the archive topic and its own table; the tests check every event lands only there.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from framework.clock import SimulatedClock
from framework.errors import UserError
from framework.testing import contracts, load, make_runtime, query, recording_bus
from framework.topology.load import LoadedRun
from nodes.external_data.fred import DAY_MS, date_ms, ms_date
from nodes.external_data.node import ExternalDataCollector
from nodes.external_data.simulator import FredSeriesGenerator, calendar_week, week_start
from tests.transport_helpers import eventually

CONTRACTS = contracts()

TIMEOUT = 30.0
SERVICE = "external-data-collector"
S = f"topology.services.{SERVICE}"
T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z, a Monday (the demo's start)
PORTS = {
    "calendar": ("economic_calendar", "external_economic_calendar"),
    "fred": ("fred_indicators", "external_fred_indicators"),
    "commodities": ("commodity_prices", "external_commodity_prices"),
}
TABLE_OF = {kind: table for kind, table in PORTS.values()}
FRED = {"DFF": "percent", "DGS10": "percent", "UNRATE": "percent", "DEXUSEU": "usd_per_eur"}
COMMODITIES = {"DCOILWTICO": "usd_per_barrel", "DHHNGSP": "usd_per_mmbtu"}


def params(**values: Any) -> list[str]:
    def literal(value: Any) -> str:
        if isinstance(value, dict):
            return "{" + ",".join(f"{k}:{v}" for k, v in value.items()) + "}"
        if isinstance(value, bool):
            return str(value).lower()
        return str(value)

    base: dict[str, Any] = {
        "simulate": True,
        "seed": 11,
        "lookback": "75d",
        "fred_series": FRED,
        "commodity_series": COMMODITIES,
        "fred_page_size": 20,
    }
    return [f"~{S}.params", *(f"++{S}.params.{k}={literal(v)}" for k, v in {**base, **values}.items())]


def demo(tmp_path: Path, *overrides: str) -> LoadedRun:
    return load(tmp_path, f"{S}.enabled=true", *overrides)


def expected_fred(seed: int, series: dict[str, str], start: str, today_ms: int, after: dict[str, int] | None = None) -> set[tuple[str, int, float]]:
    """(series, ts, value) the simulator holds with a value, newer than ``after`` (else from ``start``)."""
    generator = FredSeriesGenerator(seed)
    today = date.fromisoformat(ms_date(today_ms))
    out = set()
    for series_id in series:
        for row in generator.observations(series_id, date.fromisoformat(start), date(9999, 12, 31), today):
            ts = date_ms(row["date"])
            if row["value"] != "." and ts > (after or {}).get(series_id, -1):
                out.add((series_id, ts, float(row["value"])))
    return out


def fred_events(got: list[tuple[str, dict[str, Any]]]) -> set[tuple[str, int, float]]:
    return {(e["series"], e["ts"], e["value"]) for s, e in got if e["source"] == "fred"}


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "deadletter" / f"{SERVICE}.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


# --------------------------------------------------------------------------- the demo


async def test_demo_run_routes_each_kind_to_its_subject_and_table(tmp_path: Path) -> None:
    loaded = demo(
        tmp_path, "topology.services.synthetic-ticks.enabled=true", "topology.services.synthetic-ticks.params.duration=10m",
        "pairs=[EURUSD]", *params(polls=1),
    )  # fmt: skip
    bus, got = await recording_bus("market.external.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=["synthetic-ticks", SERVICE])
    await asyncio.wait_for(rt.run(), TIMEOUT)

    m = {s["service"]: s for s in rt.metrics()}[SERVICE]
    assert m["state"] == "stopped"
    assert (m["errors"], m["dead_lettered"]) == (0, 0)
    assert m["out"] == len(got) > 0
    contract = CONTRACTS.resolve("external_event.v1")
    assert all(contract.validate(e) is None for _, e in got)
    assert all(subject == f"market.external.{e['type']}" for subject, e in got)
    kinds = Counter(e["type"] for _, e in got)
    assert set(kinds) == {"economic_calendar", "fred_indicators", "commodity_prices"}

    for kind, table in TABLE_OF.items():
        rows = await query(tmp_path, f"SELECT type, series, ts, value FROM {table} FINAL")
        assert {r["type"] for r in rows} == {kind}, table  # each event only in the table of its type
        assert len(rows) == kinds[kind]
        assert {(r["series"], r["ts"]) for r in rows} == {(e["series"], e["ts"]) for _, e in got if e["type"] == kind}

    # FRED: every observation the simulator holds since the lookback, without the "." days, as numbers
    start = ms_date(T0 - 75 * DAY_MS)
    assert fred_events([(s, e) for s, e in got if e["type"] == "fred_indicators"]) == expected_fred(11, FRED, start, T0)
    assert fred_events([(s, e) for s, e in got if e["type"] == "commodity_prices"]) == expected_fred(11, COMMODITIES, start, T0)
    units = {e["series"]: e["unit"] for _, e in got if e["source"] == "fred"}
    assert units == {**FRED, **COMMODITIES}
    # the calendar: this week's export, each event once
    week = calendar_week(11, week_start(T0))
    calendar = [e for _, e in got if e["type"] == "economic_calendar"]
    assert len(calendar) == len({(e["series"], e["ts"]) for e in calendar}) == len(week)
    assert {e["title"] for e in calendar} == {r["title"] for r in week}


# --------------------------------------------------------------------------- incremental polls


async def test_second_poll_publishes_only_new_observations_and_changed_events(tmp_path: Path) -> None:
    loaded = demo(tmp_path, *params(polls=2, fred_every="3d", calendar_every="3d"))
    bus, got = await recording_bus("market.external.>")
    clock = SimulatedClock(T0)
    rt = make_runtime(loaded, tmp_path, pubsub=bus, clock=clock, only=[SERVICE])
    await rt.start()
    try:
        await eventually(lambda: clock.pending == 1, "the first poll to finish", timeout=TIMEOUT)
        first = list(got)
        node = rt.hosts[SERVICE].node
        assert isinstance(node, ExternalDataCollector) and node.simulator is not None
        simulator = node.simulator
        revised = "Unemployment Claims"

        def revise(rows: list[Any]) -> list[Any]:
            return [{**r, "forecast": "999K"} if r.get("title") == revised else r for r in rows]

        simulator.calendar_edit = revise
        del got[:]
        await clock.advance_to(T0 + 3 * DAY_MS)  # Thursday: same calendar week, three more days of data
        await asyncio.wait_for(rt.wait(), TIMEOUT)  # polls=2: the source finishes after its second poll
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)

    last = {}
    for series, ts, _ in fred_events(first):
        last[series] = max(ts, last.get(series, ts))
    second = fred_events(got)
    assert second, "three days later there are new observations"
    assert all(ts > last[series] for series, ts, _ in second)
    assert second == expected_fred(11, {**FRED, **COMMODITIES}, "2000-01-01", T0 + 3 * DAY_MS, after=last)
    assert not fred_events(first) & second
    requests = simulator.fred_requests()
    assert {q["observation_start"] for q in requests[-len(FRED) - len(COMMODITIES) :]} <= {ms_date(ts) for ts in last.values()}
    # only the revised calendar event is published again
    calendar = [e for _, e in got if e["type"] == "economic_calendar"]
    assert [(e["title"], e["forecast"]) for e in calendar] == [(revised, 999_000.0)]
    rows = await query(tmp_path, "SELECT series, ts, count() AS n FROM external_fred_indicators FINAL GROUP BY series, ts HAVING n > 1")
    assert rows == []


async def test_a_restart_resumes_after_the_newest_stored_observation(tmp_path: Path) -> None:
    for day, polls in ((0, 1), (4, 1)):
        loaded = demo(tmp_path, *params(polls=polls))
        bus, got = await recording_bus("market.external.>")
        rt = make_runtime(loaded, tmp_path, pubsub=bus, clock=SimulatedClock(T0 + day * DAY_MS), only=[SERVICE])
        await asyncio.wait_for(rt.run(), TIMEOUT)
        if day == 0:
            first = fred_events(got)
    stored_before = {}
    for series, ts, _ in first:
        stored_before[series] = max(ts, stored_before.get(series, ts))
    assert fred_events(got) == expected_fred(11, {**FRED, **COMMODITIES}, "2000-01-01", T0 + 4 * DAY_MS, after=stored_before)
    rows = await query(tmp_path, "SELECT series, count() AS n, uniqExact(ts) AS days FROM external_fred_indicators GROUP BY series")
    assert rows and all(r["n"] == r["days"] for r in rows)  # nothing written twice


# --------------------------------------------------------------------------- bad input and failing sources


async def test_bad_rows_and_failing_sources_are_dead_lettered_while_the_rest_goes_on(tmp_path: Path) -> None:
    loaded = demo(tmp_path, *params(polls=3, fred_every="1d", calendar_every="1d"))
    bus, got = await recording_bus("market.external.>")
    clock = SimulatedClock()  # not started: the first poll waits for the first event time
    rt = make_runtime(loaded, tmp_path, pubsub=bus, clock=clock, only=[SERVICE])
    await rt.start()
    try:
        node = rt.hosts[SERVICE].node
        assert isinstance(node, ExternalDataCollector) and node.simulator is not None
        faults = node.simulator.faults
        faults.malformed = 1  # the first answer (the calendar, polled first) is truncated JSON
        faults.unknown_series = {"DGS10"}
        await clock.advance_to(T0)
        await clock.advance_to(T0 + 1)
        await eventually(lambda: clock.pending == 1, "the first poll to finish", timeout=TIMEOUT)
        first = list(got)
        faults.bad_calendar_rows = 4
        await clock.advance_to(T0 + 1 + DAY_MS)  # the first poll ran at T0 + 1 ms, when the clock first moved
        await eventually(lambda: clock.pending == 1, "the second poll to finish", timeout=TIMEOUT)
        second = list(got)
        await clock.advance_to(T0 + 1 + 2 * DAY_MS)
        await asyncio.wait_for(rt.wait(), TIMEOUT)  # polls=3
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    third = got[len(second) :]
    got = second

    assert not [e for _, e in first if e["type"] == "economic_calendar"]  # the calendar failed...
    assert {e["series"] for _, e in first if e["source"] == "fred"} == set(FRED) - {"DGS10"} | set(COMMODITIES)  # ...FRED went on
    calendar = [e for _, e in got if e["type"] == "economic_calendar"]
    assert len(calendar) == len(calendar_week(11, week_start(T0 + DAY_MS)))  # next poll: every good row, bad ones aside

    letters = dead_letters(tmp_path)
    reasons = [d["reason"] for d in letters]
    assert any(r.startswith("calendar poll failed") and "not JSON" in r for r in reasons)
    dgs10 = [d for d in letters if d["origin"] == "fred:DGS10"]
    assert len(dgs10) == 3 and all("The series does not exist" in d["reason"] for d in dgs10)  # tried again at each poll
    rows = [d for d in letters if d["reason"].startswith("calendar row:")]
    assert len(rows) == 4  # the same bad rows in the third poll are not dead-lettered again
    assert not [e for _, e in third if e["type"] == "economic_calendar"]  # and nothing changed in the calendar
    assert any("date 'Monday 9am'" in d["reason"] and d["payload"]["title"] == "Broken Date" for d in rows)
    assert any("title None" in d["reason"] for d in rows)
    assert any("forecast 'n/a'" in d["reason"] for d in rows)
    assert any("not an object" in d["reason"] and d["payload"] == ["not", "an", "object"] for d in rows)
    assert not any("simulatedsimulated" in orjson.dumps(d).decode() for d in letters)  # the key never leaks
    m = {s["service"]: s for s in rt.metrics()}[SERVICE]
    assert m["dead_lettered"] == len(letters) and m["errors"] == 4 and m["state"] == "stopped"


async def test_live_mode_without_a_key_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FXFLOW_TEST_NO_SUCH_KEY", raising=False)
    loaded = demo(tmp_path, *params(simulate=False, fred_api_key_env="FXFLOW_TEST_NO_SUCH_KEY"))
    rt = make_runtime(loaded, tmp_path, only=[SERVICE])
    with pytest.raises(UserError, match="FRED API key missing: set the environment variable FXFLOW_TEST_NO_SUCH_KEY"):
        await asyncio.wait_for(rt.run(), TIMEOUT)
