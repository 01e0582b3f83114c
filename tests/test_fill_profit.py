"""A deal's P&L is the broker's: ``fill.v1`` ``profit`` books the same amount in execution's and performance's balance.

A USDJPY account in USD, filled at the next 1-minute bar's open (backtest profile, paper broker, no costs): the
sale fills at 155.000, the open after a bar that closed at 151.000. The broker converts the 450,000 yen at the deal's
own price; performance only ever sees bar closes, and converting at the latest close before the deal (151.000) put
its balance 5 cents off the broker's over a few thousand bars. With the broker's profit on the fill, every balance
is the hand-computed one.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from framework.testing import contracts, load, make_runtime, recording_bus
from framework.topology.model import Instrument
from nodes.backtest import reference
from nodes.trading.fills import fill_problem, fill_profit
from nodes.trading.instruments import Rules
from nodes.trading.ledger import Ledger

D = Decimal
MIN = 60_000
T = 1_793_613_600_000  # Monday 2026-11-02 10:00 UTC
SERVICES = ["mt5-connector", "execution-service", "performance-monitoring"]
PAPER = [o.replace("pairs=[EURUSD]", "pairs=[USDJPY]") for o in reference.overrides("2026-11-02T00:00Z", "2026-11-03T00:00Z")
         if "mt5-connector" in o or "performance-monitoring" in o or o.startswith("pairs=")]  # fmt: skip


def bar(ts: int, open_: float, close: float) -> dict[str, Any]:
    return {"symbol": "USDJPY", "timeframe": "1m", "ts": ts, "ts_close": ts + MIN, "open": open_, "high": max(open_, close),
            "low": min(open_, close), "close": close, "volume": 10.0, "tick_count": 10, "source": "test", "complete": True,
            "revision": 0}  # fmt: skip


def approved(sid: str, side: str, ts: int) -> dict[str, Any]:
    return {"signal_id": sid, "decision_id": f"d-{sid}", "symbol": "USDJPY", "side": side, "quantity": 1.0, "ts": ts}


async def test_a_usdjpy_round_trip_filled_at_bar_opens_books_the_brokers_profit_in_every_balance(tmp_path: Path) -> None:
    loaded = load(tmp_path, *PAPER, profile="backtest")
    bus, got = await recording_bus("broker.fill.>", "deadletter.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=SERVICES)
    await rt.start()

    async def at(ts: int, subject: str, message: dict[str, Any]) -> None:
        await rt.clock.wait_until(ts)
        await bus.publish(subject, message)

    try:
        await at(T + MIN, "bars.USDJPY.1m", bar(T, 150.500, 150.500))
        await at(T + MIN, "signals.approved.USDJPY", approved("buy", "buy", T + MIN))
        await at(T + 2 * MIN, "bars.USDJPY.1m", bar(T + MIN, 150.500, 151.000))  # the buy fills at its open, 150.500
        await at(T + 2 * MIN, "signals.approved.USDJPY", approved("sell", "sell", T + 2 * MIN))
        await at(T + 3 * MIN, "bars.USDJPY.1m", bar(T + 2 * MIN, 155.000, 155.000))  # the sale fills at 155.000
        await rt.clock.wait_until(T + 4 * MIN)
        broker = await bus.request("broker.query", {"query": "state", "ts": T + 4 * MIN})
        report = await bus.request("performance.query", {"query": "report", "ts": T + 4 * MIN})
        execution = rt.hosts["execution-service"].node.ledger
    finally:
        await asyncio.wait_for(rt.stop(), 60)

    profit = (D("155.000") - D("150.500")) * 100_000 / D("155.000")  # 450,000 JPY at the deal's price: 2,903.2258...
    want = 100_000 + profit.quantize(D("0.01"))  # 102,903.23
    fills = [m for s, m in got if s.startswith("broker.fill.")]
    assert [(f["side"], f["price"], f["profit"]) for f in fills] == [("buy", 150.5, 0.0), ("sell", 155.0, 2903.23)]
    checked = contracts(loaded.project).resolve("fill.v1")
    assert all(checked.validate(f) is None and fill_problem(f, {"USDJPY"}) is None for f in fills)
    assert D(str(broker["account"]["balance"])) == want
    assert D(str(report["balance"])) == want  # was 102,980.13: 450,000 / 151.000, the close before the deal
    assert 100_000 + sum((e.net for e in execution.entries.values()), D(0)) == want
    (trip,) = report["trades"]
    assert D(str(trip["pnl"])) == want - 100_000
    assert not [s for s, _ in got if s.startswith("deadletter.")]


USDJPY = Rules.of("USDJPY", Instrument(pip=0.01, digits=3))


@pytest.fixture
def ledger() -> Ledger:
    book = Ledger({"USDJPY": USDJPY}, "USD")
    book.quote("USDJPY", 151.0, 151.0, T)
    return book


def test_the_ledger_books_the_brokers_profit_as_it_is(ledger: Ledger) -> None:
    ledger.fill("USDJPY", "buy", D(1), D("150.5"), D(0), T - MIN, profit=D(0))
    applied = ledger.fill("USDJPY", "sell", D(1), D("155"), D(0), T, profit=D("2903.23"))
    assert applied.realized == D("450000.000") and applied.booked == D("2903.23")
    assert ledger.entries["USDJPY"].realized == D("2903.23")


def test_without_the_brokers_profit_the_ledger_converts_at_the_prices_of_the_fills_time(ledger: Ledger) -> None:
    ledger.fill("USDJPY", "buy", D(1), D("150.5"), D(0), T - MIN)
    applied = ledger.fill("USDJPY", "sell", D(1), D("155"), D(0), T)
    assert applied.booked == (D(450_000) / D(151)).quantize(D("0.01"))  # 2,980.13: the quote of that instant


def test_an_amount_waiting_for_a_price_is_booked_first_in_order() -> None:
    """EURJPY in a USD account before any USDJPY price: the first trip's yen wait; a later fill with the broker's profit
    joins them rather than jumping the queue, and both are booked together at the first rate."""
    rules = {"EURJPY": Rules.of("EURJPY", Instrument(pip=0.01, digits=3)), "USDJPY": USDJPY}
    book = Ledger(rules, "USD")
    book.fill("EURJPY", "buy", D(1), D("160"), D(0), profit=D(0))
    first = book.fill("EURJPY", "sell", D(1), D("161"), D(0))  # 100,000 JPY, no USDJPY price yet
    assert first.booked is None
    book.fill("EURJPY", "buy", D(1), D("161"), D(0), profit=D(0))
    second = book.fill("EURJPY", "sell", D(1), D("162"), D(0), profit=D("666.67"))
    assert second.booked is None and book.entries["EURJPY"].unbooked == D("200000.000")
    book.quote("USDJPY", 150.0, 150.0)
    assert book.book_waiting() == ["EURJPY"] and book.entries["EURJPY"].realized == D("1333.33")


@pytest.mark.parametrize("profit", ["12.5", None, float("inf"), 1e16, True])
def test_a_profit_that_is_no_amount_is_refused(profit: Any) -> None:
    fill = {"fill_id": "f1", "order_id": "o1", "symbol": "USDJPY", "side": "sell", "quantity": 1.0, "price": 155.0,
            "ts": T, "commission": 0.0, "profit": profit}  # fmt: skip
    assert "profit" in (fill_problem(fill, {"USDJPY"}) or "")


def test_fill_profit_is_none_when_the_fill_does_not_say() -> None:
    base = {"fill_id": "f1", "order_id": "o1", "symbol": "USDJPY", "side": "sell", "quantity": 1.0, "price": 155.0, "ts": T,
            "commission": 0.0}  # fmt: skip
    assert fill_profit(base) is None
    assert fill_profit({**base, "profit": 2903.225}) == D("2903.22")  # booked to the cent, half to even
