"""The money path under bad input: input that JSON can carry but no account can book, or that a node read
before checking it, is dead-lettered with a reason; it never fails a handler half-way nor poisons a position."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

from framework.testing import load, make_runtime, recording_bus
from framework.topology.model import Account, Instrument
from nodes.broker.base import AckStatus, OrderRequest
from nodes.broker.models import PaperParams
from nodes.broker.paper import PaperBroker
from nodes.trading.fills import fill_problem
from tests.test_execution import SEC, T0, Run, fill, tick

D = Decimal
MON = 1_793_577_600_000  # Monday 2026-11-02 00:00 UTC
T = MON + 10 * 3_600_000


def handler_errors(run: Run) -> list[str]:
    return [d["reason"] for d in run.dead() if d["reason"].startswith("handler error")]


# --------------------------------------------------------------------------- fills


def test_a_fill_check_refuses_ids_that_are_not_ids_and_a_notional_no_account_books() -> None:
    good = fill("f1", "o1", 1.0, 1.1, T0)
    assert fill_problem(good, {"EURUSD"}) is None
    assert fill_problem({**good, "fill_id": ["f1"]}, {"EURUSD"}) is not None
    assert fill_problem({**good, "fill_id": ""}, {"EURUSD"}) is not None
    assert fill_problem({**good, "order_id": None}, {"EURUSD"}) is not None
    assert fill_problem({**good, "price": 1e30}, {"EURUSD"}) is not None
    assert fill_problem({**good, "quantity": 1e25}, {"EURUSD"}) is not None
    assert fill_problem({**good, "price": float("inf")}, {"EURUSD"}) is not None
    assert fill_problem({**good, "quantity": 100.0, "price": 3000.0}, {"EURUSD"}) is None  # 100 lots of gold is a fill


async def test_a_fill_at_an_absurd_price_is_dead_lettered_and_leaves_the_position_bookable(tmp_path: Path) -> None:
    """By hand: the 1e30 fill is refused; long 1 @ 1.10000, sold @ 1.20000: (1.2 − 1.1) × 100,000 = 10,000.00 USD."""
    async with Run(tmp_path) as run:
        await run.at(T0)
        await run.publish("ticks.EURUSD", tick("EURUSD", T0, 1.1, 1.1001))
        await run.publish("broker.fill.EURUSD", fill("bad", "o-x", 1.0, 1e30, T0))
        await run.publish("broker.fill.EURUSD", fill("f1", "o-x", 1.0, 1.1, T0 + SEC))
        await run.publish("broker.fill.EURUSD", {**fill("f2", "o-x", 1.0, 1.2, T0 + 2 * SEC), "side": "sell"})
        await run.at(T0 + 3 * SEC)
        entry = run.node.ledger.entries["EURUSD"]
        assert entry.position.flat and entry.realized == D("10000.00")
        assert "bad" not in run.node.book.fill_ids
    assert not handler_errors(run)
    (dead,) = run.dead()
    assert dead["payload"]["fill_id"] == "bad" and "1e+30" in dead["reason"]


async def test_a_fill_or_error_whose_ids_are_not_strings_is_dead_lettered_with_a_reason(tmp_path: Path) -> None:
    async with Run(tmp_path) as run:
        await run.at(T0)
        await run.publish("broker.fill.EURUSD", fill(["f1"], "o-x", 1.0, 1.1, T0))  # type: ignore[arg-type]
        await run.publish("broker.fill.EURUSD", fill("f2", ["o-x"], 1.0, 1.1, T0))  # type: ignore[arg-type]
        await run.publish("broker.error.EURUSD", {"order_id": ["o-x"], "symbol": "EURUSD", "ts": T0, "code": "reject",
                                                  "message": "no", "retcode": 10006})  # fmt: skip
        await run.at(T0 + SEC)
        assert run.node.ledger.net() == {}
    assert not handler_errors(run)
    assert len(run.dead()) == 3


# --------------------------------------------------------------------------- approved signals


async def test_a_stop_loss_that_is_no_price_of_the_instrument_is_dead_lettered_not_a_handler_failure(tmp_path: Path) -> None:
    async with Run(tmp_path) as run:
        await run.signal(T0, "s1", stop_loss=1e30)
        await run.signal(T0, "s2", take_profit=1e40)
        await run.at(T0 + SEC)
    assert not handler_errors(run)
    reasons = {d["payload"]["signal_id"]: d["reason"] for d in run.dead()}
    assert set(reasons) == {"s1", "s2"} and "stop_loss" in reasons["s1"] and "take_profit" in reasons["s2"]
    assert run.statuses("s1") == run.statuses("s2") == []


# --------------------------------------------------------------------------- the paper broker and the connector


async def test_the_paper_broker_refuses_a_nan_volume_with_10014() -> None:
    broker = PaperBroker(PaperParams(), {"EURUSD": Instrument(pip=0.0001, digits=5)}, Account())
    await broker.on_tick({"symbol": "EURUSD", "ts": T - 1, "bid": 1.085, "ask": 1.0851})
    ack = await broker.submit(OrderRequest("c1", "o1", "EURUSD", "buy", D("NaN"), T))
    assert (ack.status, ack.retcode) == (AckStatus.REJECTED, 10014)
    assert broker.orders["c1"].quantity == 0 and broker.deals == []


async def test_an_order_event_the_connector_cannot_read_is_dead_lettered_and_never_tracked(tmp_path: Path) -> None:
    loaded = load(tmp_path)
    bus, got = await recording_bus("deadletter.>", "broker.error.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=["mt5-connector"], pairs=["EURUSD"])
    await rt.start()
    base: dict[str, Any] = {"order_id": "o1", "client_order_id": "o1", "signal_id": "s1", "decision_id": "d1",
                            "symbol": "EURUSD", "side": "buy", "order_type": "market", "status": "submitted", "ts": T}  # fmt: skip
    try:
        await rt.clock.wait_until(T)
        await bus.publish("ticks.EURUSD", {"symbol": "EURUSD", "ts": T, "bid": 1.085, "ask": 1.0851, "source": "test"})
        await bus.publish("orders.submitted.EURUSD", base)  # no quantity
        await bus.publish("orders.submitted.EURUSD", {**base, "order_id": "o2", "client_order_id": "o2", "quantity": None})
        await bus.publish("orders.submitted.EURUSD", {**base, "order_id": "o3", "client_order_id": "o3", "quantity": "x"})
        reply = await bus.request("broker.query", {"query": "state", "ts": T, "order_ids": []})
        tracked = dict(rt.hosts["mt5-connector"].node.orders)
    finally:
        await asyncio.wait_for(rt.stop(), 60)
    m = {s["service"]: s for s in rt.metrics()}["mt5-connector"]
    reasons = [p["reason"] for s, p in got if s == "deadletter.mt5-connector"]
    assert m["errors"] == 0 and len(reasons) == 3 and not [r for r in reasons if r.startswith("handler error")]
    assert tracked == {} and reply["orders"] == []


async def test_performance_dead_letters_a_fill_whose_id_is_no_string(tmp_path: Path) -> None:
    """Its duplicate check read the id before the fill check: a list id was a handler failure (unhashable)."""
    loaded = load(tmp_path)
    bus, got = await recording_bus("deadletter.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=["performance-monitoring"], pairs=["EURUSD"])
    await rt.start()
    try:
        await rt.clock.wait_until(T)
        await bus.publish("broker.fill.EURUSD", fill(["f1"], "o-x", 1.0, 1.1, T))  # type: ignore[arg-type]
        await bus.publish("broker.fill.EURUSD", fill({"id": 1}, "o-x", 1.0, 1.1, T))  # type: ignore[arg-type]
        report = await bus.request("performance.query", {"query": "report", "ts": T})
    finally:
        await asyncio.wait_for(rt.stop(), 60)
    m = {s["service"]: s for s in rt.metrics()}["performance-monitoring"]
    reasons = [p["reason"] for s, p in got if s == "deadletter.performance-monitoring"]
    assert m["errors"] == 0 and len(reasons) == 2 and all("fill_id" in r for r in reasons), reasons
    assert report["balance"] == 100_000 and report["open_positions"] == 0
