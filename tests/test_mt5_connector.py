"""The mt5-connector node through the real runtime (framework.testing): the paper broker on simulated
time (fills, refusals, the query reply, the log; two runs identical), and MetaTrader 5 through the
real client and the fake mt5linux bridge on a wall clock (deals polled and published once, also
across a restart; a line dropped mid-order; the password in no log, archive or file)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from framework.errors import UserError
from framework.testing import contracts, load, make_runtime, query, recording_bus
from framework.transport.base import PubSubTransport
from nodes.broker.paper import deal_ticket
from nodes.mt5_connector.node import KEEP_DONE_MS, OPEN, Mt5Connector
from nodes.mt5_connector.spec import Mt5ConnectorParams
from tests.fake_mt5.server import FakeMt5

CONTRACTS = contracts()
TIMEOUT = 30.0
MIN = 60_000
MON = 1_793_577_600_000  # Monday 2026-11-02 00:00 UTC
T = MON + 10 * 3_600_000
PASSWORD = "Zq9-never-logged-7731"


def event(cid: str, symbol: str, side: str, quantity: float, ts: int) -> dict[str, Any]:
    return {"order_id": f"ord-{cid}", "client_order_id": cid, "signal_id": f"sig-{cid}", "decision_id": f"dec-{cid}",
            "symbol": symbol, "side": side, "order_type": "market", "quantity": quantity, "status": "submitted", "ts": ts}  # fmt: skip


def tick(symbol: str, ts: int, bid: float, ask: float) -> dict[str, Any]:
    return {"symbol": symbol, "ts": ts, "bid": bid, "ask": ask, "source": "test"}


def paper_fill(cid: str, n: int = 1) -> str:
    """The fill id of the n-th deal of client order ``cid`` on the paper broker (tickets follow from the ids)."""
    return f"paper-{deal_ticket(cid, n)}"


def valid(ref: str, message: dict[str, Any]) -> bool:
    return CONTRACTS.resolve(ref).validate(message) is None


async def log_records(rt: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async for batch in rt.log.read(["broker_communication_log"], 0):
        out.extend(r.value for r in batch)
    return out


# --------------------------------------------------------------------------- the paper broker


SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("ticks.EURUSD", tick("EURUSD", T, 1.08500, 1.08510)),
    ("ticks.USDJPY", tick("USDJPY", T, 150.000, 150.012)),
    ("orders.submitted.EURUSD", event("a", "EURUSD", "buy", 1.5, T)),
    ("orders.submitted.EURUSD", event("tiny", "EURUSD", "buy", 0.001, T)),  # 10014
    ("orders.submitted.EURUSD", event("huge", "EURUSD", "sell", 99, T)),  # 10019
    ("orders.submitted.GBPNOK", event("nok", "GBPNOK", "buy", 1, T)),  # 10013
    ("orders.submitted.USDJPY", event("j", "USDJPY", "sell", 1, T)),
    ("orders.submitted.EURUSD", event("a", "EURUSD", "buy", 1.5, T)),  # the same order again: one fill
    ("ticks.EURUSD", tick("EURUSD", T + 2_000, 1.08520, 1.08530)),
    ("ticks.USDJPY", tick("USDJPY", T + 3_000, 150.100, 150.112)),
    ("orders.submitted.EURUSD", event("b", "EURUSD", "sell", 0.5, T + 4_000)),
    ("ticks.EURUSD", tick("EURUSD", T + 5_000, 1.08600, 1.08610)),
]


async def run_paper(data: Path) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any], list[dict[str, Any]]]:
    loaded = load(data, "++topology.services.mt5-connector.params.paper.commission.per_lot=3.5")
    bus, got = await recording_bus("broker.fill.>", "broker.error.>")
    rt = make_runtime(loaded, data, pubsub=bus, only=["mt5-connector"], pairs=["EURUSD", "USDJPY", "GBPNOK"])
    await rt.start()
    try:
        for subject, message in SCRIPT:
            await rt.clock.wait_until(message["ts"])
            await bus.publish(subject, message)
        reply = await bus.request("broker.query", {"query": "state", "ts": T + 6_000, "since_ms": T,
                                                   "order_ids": ["ord-a", "tiny", "b", "never-seen"]})  # fmt: skip
        logged = await log_records(rt)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    m = {s["service"]: s for s in rt.metrics()}["mt5-connector"]
    assert m["errors"] == 0 and m["dead_lettered"] == 0
    return got, reply, logged


async def test_paper_connector_fills_refuses_and_answers_queries(tmp_path: Path) -> None:
    got, reply, logged = await run_paper(tmp_path)
    fills = [m for s, m in got if s.startswith("broker.fill.")]
    errors = [(s, m["order_id"], m["code"], m["retcode"]) for s, m in got if s.startswith("broker.error.")]
    assert errors == [
        ("broker.error.EURUSD", "ord-tiny", "invalid_volume", 10014),
        ("broker.error.EURUSD", "ord-huge", "no_money", 10019),
        ("broker.error.GBPNOK", "ord-nok", "invalid", 10013),
    ]
    assert [(f["fill_id"], f["order_id"], f["side"], f["quantity"], f["price"], f["ts"], f["commission"]) for f in fills] == [
        (paper_fill("a"), "ord-a", "buy", 1.5, 1.0853, T + 2_000, 5.25),
        (paper_fill("j"), "ord-j", "sell", 1.0, 150.1, T + 3_000, 3.5),
        (paper_fill("b"), "ord-b", "sell", 0.5, 1.086, T + 5_000, 1.75),
    ]
    assert all(valid("fill.v1", f) for f in fills)

    assert valid("broker_state.v1", reply), CONTRACTS.resolve("broker_state.v1").validate(reply)
    assert reply["connected"] is True
    assert [(p["symbol"], p["quantity"], p["avg_price"]) for p in reply["positions"]] == [("EURUSD", 1.0, 1.0853), ("USDJPY", -1.0, 150.1)]
    assert [(o["order_id"], o["status"], o["filled_quantity"]) for o in reply["orders"]] == [
        ("ord-a", "filled", 1.5), ("ord-tiny", "rejected", 0.0), ("ord-b", "filled", 0.5),
    ]  # "never-seen" is nobody's: not listed
    assert [f["fill_id"] for f in reply["fills"]] == [paper_fill("a"), paper_fill("j"), paper_fill("b")]
    # balance: 100,000 - commissions (5.25 + 3.50 + 1.75) + (1.08600 - 1.08530) × 50,000 = 35.00
    assert reply["account"]["balance"] == 100_024.5

    operations = [(r["direction"], r["operation"], r.get("order_id")) for r in logged]
    assert ("request", "submit", "ord-a") in operations and ("response", "submit", "ord-tiny") in operations
    assert ("event", "deal", "ord-b") in operations and ("event", "error", "ord-huge") in operations
    assert operations.count(("request", "submit", "ord-a")) == 2  # the duplicate is logged, not filled
    assert all(valid("broker_log.v1", r) for r in logged)


async def test_paper_connector_is_deterministic(tmp_path: Path) -> None:
    first = await run_paper(tmp_path / "one")
    second = await run_paper(tmp_path / "two")
    assert first == second


async def test_paper_state_survives_a_stop_on_simulated_time(tmp_path: Path) -> None:
    await run_paper(tmp_path)
    loaded = load(tmp_path, "pairs=[EURUSD,USDJPY]")
    bus, got = await recording_bus("broker.fill.>", "broker.error.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=["mt5-connector"])
    await rt.start()
    try:
        await rt.clock.wait_until(T + 10_000)
        reply = await bus.request("broker.query", {"query": "state", "ts": T + 10_000, "since_ms": T})
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert [p["symbol"] for p in reply["positions"]] == ["EURUSD", "USDJPY"] and len(reply["fills"]) == 3
    assert reply["account"]["balance"] == 100_024.5 and got == []  # restored, nothing published again


async def test_a_stale_order_is_refused_with_a_reason_and_never_sent(tmp_path: Path) -> None:
    """An order older than ``max_order_age`` when it first arrives (a redelivery after a replay or an outage) is not
    sent: an old decision must not trade now. A known order redelivered late is a duplicate, not an error."""
    loaded = load(tmp_path, "++topology.services.mt5-connector.params.max_order_age=1m")
    bus, got = await recording_bus("broker.fill.>", "broker.error.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=["mt5-connector"], pairs=["EURUSD"])
    await rt.start()
    try:
        await rt.clock.wait_until(T)
        await bus.publish("ticks.EURUSD", tick("EURUSD", T, 1.08500, 1.08510))
        await bus.publish("orders.submitted.EURUSD", event("fresh", "EURUSD", "buy", 1.0, T))
        await rt.clock.wait_until(T + 2 * MIN)
        await bus.publish("ticks.EURUSD", tick("EURUSD", T + 2 * MIN, 1.08520, 1.08530))
        await bus.publish("orders.submitted.EURUSD", event("old", "EURUSD", "sell", 1.0, T + MIN - 1))  # 60.001 s old
        await bus.publish("orders.submitted.EURUSD", event("fresh", "EURUSD", "buy", 1.0, T))  # redelivered: known
        reply = await bus.request("broker.query", {"query": "state", "ts": T + 2 * MIN, "order_ids": ["ord-old", "ord-fresh"]})
        logged = await log_records(rt)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    errors = [m for s, m in got if s.startswith("broker.error.")]
    assert [(e["order_id"], e["code"], "retcode" in e) for e in errors] == [("ord-old", "stale_order", False)]
    assert errors[0]["message"].startswith("not sent to the broker: the order is 60001 ms old") and valid("broker_error.v1", errors[0])
    assert [m["order_id"] for s, m in got if s.startswith("broker.fill.")] == ["ord-fresh"]
    assert not [r for r in logged if r["operation"] == "submit" and r.get("order_id") == "ord-old"]  # never reached the broker
    assert [(o["order_id"], o["status"]) for o in reply["orders"]] == [("ord-fresh", "filled")]  # the broker never heard of it


async def test_a_partial_fill_on_the_paper_broker_ends_the_order_cancelled_through_execution(tmp_path: Path) -> None:
    """The paper broker with IOC partial fills: 0.4 of 1 lot fills, the rest is cancelled with 10010; execution ends the
    order cancelled with the 0.4 kept in its executions and position (not partially filled forever)."""
    loaded = load(tmp_path, "pairs=[EURUSD]", "topology.services.execution-service.enabled=true",
                  "++topology.services.mt5-connector.params.paper.partial_fills={max_lots: 0.4, rest: cancel}")  # fmt: skip
    bus, got = await recording_bus("orders.>", "broker.>", "deadletter.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=["mt5-connector", "execution-service"])
    await rt.start()
    try:
        await rt.clock.wait_until(T)
        await bus.publish("ticks.EURUSD", tick("EURUSD", T, 1.08500, 1.08510))
        await bus.publish("signals.approved.EURUSD", {"signal_id": "s1", "decision_id": "d1", "symbol": "EURUSD", "side": "buy",
                                                      "quantity": 1.0, "ts": T})  # fmt: skip
        await rt.clock.wait_until(T + 1_000)
        await bus.publish("ticks.EURUSD", tick("EURUSD", T + 1_000, 1.08510, 1.08520))
        await rt.clock.wait_until(T + 5_000)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    orders = [m for s, m in got if s.startswith("orders.")]
    assert [o["status"] for o in orders] == ["pending", "submitted", "partially_filled", "cancelled"]
    assert orders[-1]["filled_quantity"] == 0.4 and "MT5 retcode 10010" in orders[-1]["reason"]
    assert [(m["code"], m["retcode"]) for s, m in got if s.startswith("broker.error.")] == [("partial_fill", 10010)]
    assert not [s for s, _ in got if s.startswith("deadletter.")]
    assert [r["quantity"] for r in await query(tmp_path, "SELECT quantity FROM executions FINAL")] == [0.4]
    assert (await query(tmp_path, "SELECT quantity FROM positions FINAL"))[0]["quantity"] == pytest.approx(0.4)


# --------------------------------------------------------------------------- MetaTrader 5 through the fake bridge


@pytest.fixture(scope="module")
def bridge() -> Iterator[FakeMt5]:
    fake = FakeMt5()
    yield fake
    fake.stop()


@pytest.fixture
def mt5(bridge: FakeMt5, monkeypatch: pytest.MonkeyPatch) -> FakeMt5:
    bridge.fake.reset(password=PASSWORD)
    monkeypatch.setenv("MT5_PASSWORD", PASSWORD)
    return bridge


def mt5_overrides(port: int) -> list[str]:
    return [
        "pairs=[EURUSD,USDJPY]",
        "topology.runtime.clock=wall",
        "topology.services.mt5-connector.params.broker=mt5linux",
        "++topology.services.mt5-connector.params.poll=50ms",
        f"++topology.services.mt5-connector.params.mt5={{port: {port}, login: 5001234, timeout: 10s}}",
    ]


async def until(predicate: Any, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def start_mt5(data: Path, port: int) -> tuple[Any, PubSubTransport, list[tuple[str, dict[str, Any]]]]:
    bus, got = await recording_bus("broker.fill.>", "broker.error.>")
    rt = make_runtime(load(data, *mt5_overrides(port)), data, pubsub=bus, only=["mt5-connector"])
    await rt.start()
    return rt, bus, got


async def test_mt5_deals_are_polled_and_published_once_also_across_a_restart(tmp_path: Path, mt5: FakeMt5) -> None:
    rt, bus, got = await start_mt5(tmp_path, mt5.port)
    try:
        now = int(time.time() * 1000)
        await bus.publish("orders.submitted.EURUSD", event("m1", "EURUSD", "buy", 0.3, now))
        await until(lambda: any(s.startswith("broker.fill.") for s, _ in got), "the fill")
        polls = mt5.fake.count("history_deals_get")
        await until(lambda: mt5.fake.count("history_deals_get") >= polls + 5, "five more polls")  # each sees the deal again
        await bus.publish("orders.submitted.EURUSD", event("m1", "EURUSD", "buy", 0.3, now))  # a duplicate order
        await asyncio.sleep(0.2)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    fills = [m for s, m in got if s.startswith("broker.fill.")]
    assert len(fills) == 1 and mt5.fake.count("order_send") == 1
    (fill,) = fills
    deal = mt5.fake.deals[0]
    assert (fill["fill_id"], fill["order_id"], fill["quantity"], fill["price"], fill["commission"]) == (
        f"mt5-{deal.ticket}", "ord-m1", 0.3, 1.0851, 1.05)
    assert valid("fill.v1", fill)

    rt, bus, again = await start_mt5(tmp_path, mt5.port)  # a new process would start the same way: from broker.json
    try:
        polls = mt5.fake.count("history_deals_get")
        await until(lambda: mt5.fake.count("history_deals_get") >= polls + 3, "polls after the restart")
        reply = await bus.request("broker.query", {"query": "state", "ts": int(time.time() * 1000), "order_ids": ["ord-m1"],
                                                   "since_ms": now - 1000})  # fmt: skip
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert [m for s, m in again if s.startswith("broker.fill.")] == []
    assert valid("broker_state.v1", reply)
    assert [(o["order_id"], o["status"], o["quantity"]) for o in reply["orders"]] == [("ord-m1", "filled", 0.3)]
    assert [(p["symbol"], p["quantity"]) for p in reply["positions"]] == [("EURUSD", 0.3)]
    assert [f["fill_id"] for f in reply["fills"]] == [fill["fill_id"]]


async def test_mt5_deal_swap_is_published_with_its_fill(tmp_path: Path, mt5: FakeMt5) -> None:
    """The swap MT5 accrued on a position at its rolls is realized by the deal that closes it (deal.swap): the fill says
    so (fill.v1 swap), pro rata for a partial close; an opening deal's fill has none."""
    rt, bus, got = await start_mt5(tmp_path, mt5.port)
    try:
        now = int(time.time() * 1000)
        await bus.publish("orders.submitted.EURUSD", event("sw1", "EURUSD", "buy", 0.4, now))
        await until(lambda: len(got) >= 1, "the opening fill")
        mt5.fake.roll("EURUSD", -7.80)  # three nights of 0.4 lots at -6.5 points
        await bus.publish("orders.submitted.EURUSD", event("sw2", "EURUSD", "sell", 0.1, now + 1))
        await until(lambda: len(got) >= 2, "the partial close")
        await bus.publish("orders.submitted.EURUSD", event("sw3", "EURUSD", "sell", 0.3, now + 2))
        await until(lambda: len(got) >= 3, "the close")
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    fills = [m for s, m in got if s.startswith("broker.fill.")]
    assert [(f["order_id"], f.get("swap")) for f in fills] == [("ord-sw1", None), ("ord-sw2", -1.95), ("ord-sw3", -5.85)]
    assert all(valid("fill.v1", f) for f in fills)


async def test_mt5_refusals_are_broker_errors_with_the_retcode(tmp_path: Path, mt5: FakeMt5) -> None:
    mt5.fake.plan(("retcode", 10006))
    mt5.fake.set_closed("USDJPY")
    rt, bus, got = await start_mt5(tmp_path, mt5.port)
    try:
        now = int(time.time() * 1000)
        await bus.publish("orders.submitted.EURUSD", event("r1", "EURUSD", "buy", 0.1, now))
        await bus.publish("orders.submitted.USDJPY", event("r2", "USDJPY", "buy", 0.1, now))
        await bus.publish("orders.submitted.EURUSD", event("r3", "EURUSD", "buy", 0.001, now))
        await until(lambda: len(got) >= 3, "three errors")
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert sorted((s, m["order_id"], m["code"], m["retcode"]) for s, m in got) == [
        ("broker.error.EURUSD", "ord-r1", "reject", 10006),
        ("broker.error.EURUSD", "ord-r3", "invalid_volume", 10014),
        ("broker.error.USDJPY", "ord-r2", "market_closed", 10018),
    ]
    assert all(valid("broker_error.v1", m) for _, m in got)


async def test_mt5_line_dropped_mid_order_is_an_error_then_one_fill(tmp_path: Path, mt5: FakeMt5) -> None:
    mt5.fake.plan(("drop_after",))
    rt, bus, got = await start_mt5(tmp_path, mt5.port)
    try:
        now = int(time.time() * 1000)
        await bus.publish("orders.submitted.EURUSD", event("d1", "EURUSD", "sell", 0.2, now))
        await until(lambda: any(s.startswith("broker.fill.") for s, _ in got), "the fill after the reconnect")
        in_doubt = await bus.request("broker.query", {"query": "state", "ts": now, "order_ids": ["d1"]})
        await bus.publish("orders.submitted.EURUSD", event("d1", "EURUSD", "sell", 0.2, now))  # execution retries
        await asyncio.sleep(0.3)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    errors = [m for s, m in got if s.startswith("broker.error.")]
    fills = [m for s, m in got if s.startswith("broker.fill.")]
    assert [(e["order_id"], e["code"], e["retcode"]) for e in errors] == [("ord-d1", "timeout", 10012)]  # in doubt: ask, don't guess
    assert [(f["order_id"], f["side"], f["quantity"]) for f in fills] == [("ord-d1", "sell", 0.2)]
    assert mt5.fake.count("order_send") == 1 and len(mt5.fake.deals) == 1  # neither lost nor doubled
    assert [(o["order_id"], o["status"]) for o in in_doubt["orders"]] == [("ord-d1", "filled")]


async def test_mt5_partial_fill_reports_the_fill_before_the_cancelled_rest(tmp_path: Path, mt5: FakeMt5) -> None:
    mt5.fake.plan(("partial", 0.4))
    rt, bus, got = await start_mt5(tmp_path, mt5.port)
    try:
        now = int(time.time() * 1000)
        await bus.publish("orders.submitted.EURUSD", event("p1", "EURUSD", "buy", 1.0, now))
        await until(lambda: any(s.startswith("broker.error.") for s, _ in got), "the cancelled rest")
        reply = await bus.request("broker.query", {"query": "state", "ts": now, "since_ms": now - 1000, "order_ids": ["p1"]})
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert [(s.split(".")[1], m.get("quantity"), m.get("retcode")) for s, m in got] == [("fill", 0.4, None), ("error", None, 10010)]
    assert [(o["order_id"], o["status"], o["filled_quantity"]) for o in reply["orders"]] == [("ord-p1", "cancelled", 0.4)]


async def test_a_broker_that_disconnects_mid_order_leaves_every_order_in_a_known_state(tmp_path: Path, mt5: FakeMt5) -> None:
    """execution-service and the connector on MT5 (the fake bridge): the line dropped after the terminal executed the
    order (in doubt, 10012: found by the next poll, filled), dropped before it reached the terminal (in doubt, then
    asked about after ack_timeout: the broker does not know it, failed), the trade server unreachable (10031: failed), a
    partial fill (10010: cancelled, the part kept). None is left open; the positions agree."""
    mt5.fake.plan(("partial", 0.4), ("drop_after",), ("drop_before",), ("retcode", 10031))
    overrides = [*mt5_overrides(mt5.port), "topology.services.execution-service.enabled=true",
                 "++topology.services.execution-service.params={ack_timeout: 1s, check_every: 200ms}"]  # fmt: skip
    bus, got = await recording_bus("orders.>", "broker.>", "risk.alert.>", "deadletter.>")
    rt = make_runtime(load(tmp_path, *overrides), tmp_path, pubsub=bus, only=["mt5-connector", "execution-service"])
    signals = {"partial": 1.0, "after": 0.2, "before": 0.3, "offline": 0.5}
    await rt.start()
    try:
        for name, lots in signals.items():
            await bus.publish("signals.approved.EURUSD", {"signal_id": name, "decision_id": f"d-{name}", "symbol": "EURUSD",
                                                          "side": "buy", "quantity": lots, "ts": int(time.time() * 1000)})  # fmt: skip
            await until(lambda: any(m["signal_id"] == name and m["status"] == "submitted" for s, m in got if s.startswith("orders.")),
                        f"order {name} sent")  # one at a time, so the terminal's script meets them in order

        def final() -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for s, m in got:
                if s.startswith("orders."):
                    out[m["signal_id"]] = m
            return out

        await until(lambda: all(final().get(n, {}).get("status") in ("filled", "cancelled", "failed") for n in signals), "every order done")
        await asyncio.sleep(0.3)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    done = final()
    assert {n: (o["status"], o["filled_quantity"]) for n, o in done.items()} == {
        "partial": ("cancelled", 0.4), "after": ("filled", 0.2), "before": ("failed", 0.0), "offline": ("failed", 0.0)}  # fmt: skip
    assert done["before"]["reason"].startswith("no acknowledgement within 1s; the broker does not know the order")
    assert "MT5 retcode 10031" in done["offline"]["reason"]
    assert sorted(m["retcode"] for s, m in got if s.startswith("broker.error.")) == [10010, 10012, 10012, 10031]
    assert mt5.fake.count("order_send") == 4 and round(mt5.fake.positions["EURUSD"]["volume"], 2) == 0.6
    assert not [m for s, m in got if s in ("risk.alert.position_mismatch", "risk.alert.illegal_transition") or s.startswith("deadletter.")]
    assert (await query(tmp_path, "SELECT sum(quantity) AS lots FROM executions FINAL"))[0]["lots"] == pytest.approx(0.6)


async def test_mt5_password_never_reaches_logs_the_archive_or_files(tmp_path: Path, mt5: FakeMt5, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rt, bus, got = await start_mt5(tmp_path, mt5.port)
    try:
        now = int(time.time() * 1000)
        await bus.publish("orders.submitted.EURUSD", event("p1", "EURUSD", "buy", 0.1, now))
        await until(lambda: any(s.startswith("broker.fill.") for s, _ in got), "the fill")
        logged = await log_records(rt)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    init = [r for r in logged if r["operation"] == "initialize" and r["direction"] == "request"]
    assert init and init[0]["payload"]["password"] == "***"
    assert {"order_check", "order_send", "history_deals_get"} <= {r["operation"] for r in logged}
    assert PASSWORD not in repr(logged) and PASSWORD not in caplog.text and PASSWORD not in repr(got)
    secret = PASSWORD.encode()
    for root, _, files in os.walk(tmp_path):
        for name in files:
            assert secret not in (Path(root) / name).read_bytes(), f"the password is in {Path(root) / name}"
    assert any(tmp_path.rglob("*")), "the run wrote its archive and state under data_dir"


async def test_an_unreachable_bridge_refuses_orders_with_10031_and_queries_say_so(tmp_path: Path, mt5: FakeMt5) -> None:
    mt5.fake.set_offline(True)  # the terminal has no connection: initialize fails
    rt, bus, got = await start_mt5(tmp_path, mt5.port)
    try:
        now = int(time.time() * 1000)
        await bus.publish("orders.submitted.EURUSD", event("u1", "EURUSD", "buy", 0.1, now))
        await until(lambda: len(got) >= 1, "the error")
        reply = await bus.request("broker.query", {"query": "state", "ts": now, "order_ids": ["u1"]})
        mt5.fake.set_offline(False)
        await bus.publish("orders.submitted.EURUSD", event("u1", "EURUSD", "buy", 0.1, now))  # execution sends it again
        await until(lambda: any(s.startswith("broker.fill.") for s, _ in got), "the fill once back")
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert [(m["order_id"], m["retcode"]) for s, m in got if s.startswith("broker.error.")] == [("ord-u1", 10031)]
    assert reply["connected"] is False and valid("broker_state.v1", reply)
    assert [(o["order_id"], o["status"]) for o in reply["orders"]] == [("ord-u1", "rejected")]
    assert len([m for s, m in got if s.startswith("broker.fill.")]) == 1


async def test_broker_mt5_without_the_windows_package_stops_with_one_line(tmp_path: Path) -> None:
    try:
        import MetaTrader5  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the MetaTrader5 package is installed here")
    loaded = load(tmp_path, "pairs=[EURUSD]", "topology.services.mt5-connector.params.broker=mt5")
    bus, _ = await recording_bus("broker.error.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=["mt5-connector"])
    with pytest.raises(UserError) as refused:
        await rt.start()
    message = str(refused.value)
    assert message.startswith("services.mt5-connector.params.broker: ") and "\n" not in message
    assert "Windows" in message and "mt5linux" in message


# --------------------------------------------------------------------------- pruning


def _full_scan(c: Mt5Connector) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """The orders and order ids a prune by the plain rule keeps (the connector unchanged)."""
    orders, by_order_id = dict(c.orders), dict(c.by_order_id)
    assert c.cursor is not None
    if c.cursor >= c._next_prune_ms:
        old = [cid for cid, o in orders.items() if o["status"] not in OPEN and o["ts"] < c.cursor - KEEP_DONE_MS]
        for cid in old:
            by_order_id.pop(orders.pop(cid)["order_id"], None)
    return [(cid, id(o)) for cid, o in orders.items()], list(by_order_id.items())


def test_a_prune_forgets_exactly_the_orders_a_full_scan_would() -> None:
    """The orders a prune forgets come off a heap by their ts: at every prune of a random run, the connector keeps
    what the plain rule keeps, in the same order, with rejected orders sent again under their client id, orders
    that leave and re-enter an open status, shared order ids, a ts moved later, and orders restored from the saved
    document."""
    rng = random.Random(20261124)
    hour = 3_600_000
    c = Mt5Connector(None, Mt5ConnectorParams())
    c.broker = SimpleNamespace(kind="paper")  # type: ignore[assignment]
    c.published, c._next_prune_ms = {}, 0
    c._set_orders({})
    now, cids, everyone, seen = T, ["c0"], [], {"prunes": 0, "removed": 0, "resent": 0}
    statuses = ["submitted", "accepted", "partially_filled", "unknown", "filled", "cancelled", "rejected", "expired"]
    for step in range(6000):
        r = rng.random()
        if r < 0.3:
            rejected = [cid for cid, o in c.orders.items() if o["status"] == "rejected"]
            cid = rng.choice(rejected or cids) if rng.random() < 0.3 else f"c{step}"
            known = c.orders.get(cid)
            if known is None or known["status"] == "rejected":  # what on_order takes in
                seen["resent"] += known is not None
                order_id = f"ord-{rng.choice(cids)}" if rng.random() < 0.05 else f"ord-{cid}"
                known = {"order_id": order_id, "ts": now - rng.randint(0, 3 * 24 * hour), "status": "submitted"}
                c._track(cid, known)
                cids.append(cid)
                everyone.append(known)
        elif r < 0.75 and everyone:
            known = rng.choice(list(c.orders.values())) if c.orders and rng.random() < 0.9 else rng.choice(everyone)
            known["status"] = rng.choice(statuses)
            if rng.random() < 0.03:  # no path moves an order's ts today: the prune re-checks the rule all the same
                known["ts"] += rng.randint(0, 3 * 24 * hour)
        elif r < 0.98:
            now += rng.randint(0, 6 * hour)
            c.cursor = now
            if rng.random() < 0.5:
                c._next_prune_ms = 0
            rule, before = _full_scan(c), len(c.orders)
            c._prune()
            assert ([(cid, id(o)) for cid, o in c.orders.items()], list(c.by_order_id.items())) == rule
            seen["prunes"] += 1
            seen["removed"] += before - len(c.orders)
        else:
            c._set_orders(json.loads(json.dumps(c.orders)))  # as _load takes them from the saved document
            everyone.extend(c.orders.values())
    assert seen["prunes"] > 500 and seen["removed"] > 500 and seen["resent"] > 20
