"""Stop loss and take profit: the levels the risk gate sets travel on the order to the broker and are applied there.

The paper broker's rule, by hand: a long closes at the bid, a short at the ask, once a price reaches a level; on a
tick the deal is at that tick (a gap through a level fills beyond it); on a bar (``fill_on: bar_open``) a level inside
the bar's range fills at the level, the stop first when both are inside (the range does not say which came first, as
backtesting.py assumes), and a bar that opens beyond a level fills at its open. A level on the wrong side of the price
is refused with MT5's 10016. MT5 gets ``sl``/``tp`` in the MqlTradeRequest and reports the server's closes with the
deal reasons 4 and 5; execution books such a fill without calling it an unknown order.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from framework.testing import load, make_runtime, recording_bus
from nodes.broker.base import AckStatus, OrderRequest
from tests.test_paper_broker import HOUR, MIN, T, bar, broker, tick

D = Decimal


def order(cid: str, side: str, ts: int, sl: str | None = None, tp: str | None = None, quantity: str = "1",
          symbol: str = "EURUSD") -> OrderRequest:  # fmt: skip
    return OrderRequest(cid, f"order-{cid}", symbol, side, D(quantity), ts, stop_loss=None if sl is None else D(sl),
                        take_profit=None if tp is None else D(tp))  # fmt: skip


async def test_a_long_is_closed_at_the_tick_that_reaches_its_stop_at_that_ticks_bid() -> None:
    b = broker()
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
    assert (await b.submit(order("b1", "buy", T, sl="1.08300", tp="1.08900"))).status is AckStatus.ACCEPTED
    await b.on_tick(tick("EURUSD", T + 1, 1.08500, 1.08510))  # fills at the ask, 1.08510
    await b.on_tick(tick("EURUSD", T + 2, 1.08301, 1.08311))  # not yet
    assert "EURUSD" in b.positions
    await b.on_tick(tick("EURUSD", T + 3, 1.08250, 1.08260))  # gapped through the stop: the market, 1.08250
    opened, closed = b.deals
    assert (closed.side, closed.price, closed.reason, closed.entry, closed.client_order_id) == ("sell", D("1.08250"), "sl", "out", None)
    assert closed.profit == (D("1.08250") - D("1.08510")) * 100_000 and "EURUSD" not in b.positions


async def test_a_short_is_closed_at_the_ask_that_reaches_its_target() -> None:
    b = broker()
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
    await b.submit(order("s1", "sell", T, sl="1.08800", tp="1.08200"))
    await b.on_tick(tick("EURUSD", T + 1, 1.08500, 1.08510))  # fills at the bid, 1.08500
    await b.on_tick(tick("EURUSD", T + 2, 1.08195, 1.08205))  # the bid is below the target, the ask is not
    assert "EURUSD" in b.positions
    await b.on_tick(tick("EURUSD", T + 3, 1.08190, 1.08200))
    closed = b.deals[-1]
    assert (closed.side, closed.price, closed.reason) == ("buy", D("1.08200"), "tp")
    assert closed.profit == (D("1.08500") - D("1.08200")) * 100_000


BAR = {"fill_on": "bar_open", "bar_timeframe": "1m", "spread": {"source": "fixed", "points": {"default": 2.0}}}


def minute(ts: int, o: float, h: float, lo: float, c: float) -> dict[str, Any]:
    return {**bar("EURUSD", ts, o, c, "1m", None, MIN), "high": h, "low": lo}


@pytest.mark.parametrize(("o", "h", "lo", "price", "reason", "at_open"), [
    (1.08500, 1.08600, 1.08250, "1.08300", "sl", False),  # the stop inside the range: at the stop, dated at the close
    (1.08500, 1.09000, 1.08250, "1.08300", "sl", False),  # both inside: the stop first
    (1.08500, 1.09000, 1.08450, "1.08900", "tp", False),  # the target inside
    (1.08100, 1.08200, 1.08000, "1.08100", "sl", True),  # opened below the stop: at the open, dated at the open
    (1.09100, 1.09200, 1.09000, "1.09100", "tp", True),  # opened above the target
])  # fmt: skip
async def test_a_long_on_bars_reaches_its_levels_by_the_bars_range(o: float, h: float, lo: float, price: str, reason: str,
                                                                   at_open: bool) -> None:  # fmt: skip
    b = broker(BAR)
    await b.on_bar(minute(T - MIN, 1.08500, 1.08500, 1.08500, 1.08500))
    await b.submit(order("b1", "buy", T, sl="1.08300", tp="1.08900"))
    await b.on_bar(minute(T, 1.08500, 1.08520, 1.08480, 1.08500))  # fills at this open's ask, 1.08520
    await b.on_bar(minute(T + MIN, o, h, lo, 1.08500))
    closed = b.deals[-1]
    assert (closed.side, closed.price, closed.reason) == ("sell", D(price), reason)
    assert closed.ts == (T + MIN if at_open else T + 2 * MIN)
    assert "EURUSD" not in b.positions


async def test_a_short_on_bars_is_judged_on_the_ask() -> None:
    """2 points of spread: the ask's high is the bid's high + 0.00002."""
    b = broker(BAR)
    await b.on_bar(minute(T - MIN, 1.08500, 1.08500, 1.08500, 1.08500))
    await b.submit(order("s1", "sell", T, sl="1.08700"))
    await b.on_bar(minute(T, 1.08500, 1.08500, 1.08500, 1.08500))  # sold at the bid, 1.08500
    await b.on_bar(minute(T + MIN, 1.08500, 1.08697, 1.08450, 1.08500))  # the ask reaches 1.08699: not yet
    assert "EURUSD" in b.positions
    await b.on_bar(minute(T + 2 * MIN, 1.08500, 1.08698, 1.08450, 1.08500))  # the ask reaches 1.08700
    closed = b.deals[-1]
    assert (closed.side, closed.price, closed.reason, closed.ts) == ("buy", D("1.08700"), "sl", T + 3 * MIN)


@pytest.mark.parametrize(("side", "sl", "tp"), [("buy", "1.08500", None), ("buy", None, "1.08400"), ("sell", "1.08510", None),
                                               ("sell", None, "1.08600")])  # fmt: skip
async def test_a_level_on_the_wrong_side_of_the_price_is_refused_with_10016(side: str, sl: str | None, tp: str | None) -> None:
    b = broker()
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
    ack = await b.submit(order("x", side, T, sl=sl, tp=tp))
    assert (ack.status, ack.retcode) == (AckStatus.REJECTED, 10016) and "invalid stops" in ack.message


async def test_levels_follow_the_position_across_adds_reversals_and_a_restart() -> None:
    b = broker()
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
    await b.submit(order("b1", "buy", T, sl="1.08300", tp="1.08900"))
    await b.on_tick(tick("EURUSD", T + 1, 1.08500, 1.08510))
    await b.submit(order("b2", "buy", T + 1, tp="1.09000"))  # adds; only the target moves
    await b.on_tick(tick("EURUSD", T + 2, 1.08500, 1.08510))
    held = b.positions["EURUSD"]
    assert (held.stop_loss, held.take_profit) == (D("1.08300"), D("1.09000"))
    restored = broker()
    restored.restore(json.loads(json.dumps(b.snapshot())))
    assert (restored.positions["EURUSD"].stop_loss, restored.positions["EURUSD"].take_profit) == (D("1.08300"), D("1.09000"))
    await restored.submit(order("s1", "sell", T + 2, quantity="3"))  # reverses to 1 lot short, with no levels of its own
    await restored.on_tick(tick("EURUSD", T + 3, 1.08500, 1.08510))
    short = restored.positions["EURUSD"]
    assert short.position.quantity == -1 and (short.stop_loss, short.take_profit) == (None, None)
    await restored.on_tick(tick("EURUSD", T + 4, 1.08290, 1.08300))  # the long's old stop means nothing now
    assert restored.positions["EURUSD"].position.quantity == -1


async def test_a_position_without_levels_is_never_closed_by_a_price() -> None:
    b = broker()
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
    await b.submit(order("b1", "buy", T))
    for i, bid in enumerate((1.0, 1.05, 1.2)):  # -8,510 at worst on a 100,000 account: far from a stop-out
        await b.on_tick(tick("EURUSD", T + 1 + i, bid, bid + 0.0001))
    assert [d.reason for d in b.deals] == ["client"] and b.positions["EURUSD"].position.quantity == 1


SERVICES = ["mt5-connector", "execution-service"]


async def test_a_stop_set_by_the_signal_closes_the_position_and_execution_books_it_as_the_brokers_close(tmp_path: Path) -> None:
    loaded = load(tmp_path, "pairs=[EURUSD]", *(f"topology.services.{s}.enabled=true" for s in SERVICES),
                  "++topology.services.execution-service.params.check_every=1m")  # fmt: skip
    bus, got = await recording_bus("broker.fill.>", "risk.alert.>", "orders.>", "deadletter.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=SERVICES)
    await rt.start()

    async def at(ts: int, subject: str, message: dict[str, Any]) -> None:
        await rt.clock.wait_until(ts)
        await bus.publish(subject, message)

    approved = {"signal_id": "s1", "decision_id": "d-s1", "symbol": "EURUSD", "side": "buy", "quantity": 1.0, "ts": T,
                "stop_loss": 1.083, "take_profit": 1.089}  # fmt: skip
    try:
        await at(T, "ticks.EURUSD", tick("EURUSD", T, 1.08500, 1.08510))
        await at(T, "signals.approved.EURUSD", approved)
        await at(T + 1000, "ticks.EURUSD", tick("EURUSD", T + 1000, 1.08500, 1.08510))
        await at(T + 2000, "ticks.EURUSD", tick("EURUSD", T + 2000, 1.08290, 1.08300))
        await rt.clock.wait_until(T + HOUR)
        ledger = rt.hosts["execution-service"].node.ledger
    finally:
        await asyncio.wait_for(rt.stop(), 60)
    fills = [m for s, m in got if s.startswith("broker.fill.")]
    assert [(f["side"], f["price"], f.get("reason")) for f in fills] == [("buy", 1.0851, None), ("sell", 1.0829, "sl")]
    assert fills[1]["order_id"].startswith("stop-loss-") and fills[1]["profit"] == -220.0
    assert ledger.entries["EURUSD"].position.flat and ledger.entries["EURUSD"].realized == D("-220.00")
    assert not [m for s, m in got if s.startswith("risk.alert.") and m.get("type") == "unknown_fill"]
    assert not [s for s, _ in got if s.startswith("deadletter.")]


async def test_mt5_gets_the_levels_in_its_request_and_its_own_closes_come_back_as_such() -> None:
    from tests.fake_mt5.server import FakeMt5
    from tests.test_mt5_client import PASSWORD, client

    server = FakeMt5()
    try:
        server.fake.reset(password=PASSWORD)
        b = client(server, magic=777)
        await b.connect()
        ack = await b.submit(order("o-1", "buy", T, sl="1.08300", tp="1.08900", quantity="0.25"))
        assert ack.status is AckStatus.ACCEPTED
        (request,) = [args[0] for name, args, _ in server.fake.call_log() if name == "order_send"]
        assert (request["sl"], request["tp"]) == (1.083, 1.089)
        server.fake.add_deal("EURUSD", "sell", 0.25, comment="[sl 1.08300]", magic=777, reason=4)  # the server's stop
        deals = await b.poll(0)
        closed = next(d for d in deals if d.side == "sell")
        assert (closed.reason, closed.client_order_id) == ("sl", None)  # its comment is no order of ours
        await b.close()
    finally:
        server.stop()


# --------------------------------------------------------------------------- a reviewer's cases


async def test_an_order_that_arrives_late_is_stopped_on_the_kept_prices_as_on_a_replay() -> None:
    """Live, an order may reach the broker after the prices that follow its time; it fills on the first of them (the
    same price as on a replay), so its stop must be judged on the kept prices after that fill too: on a replay the
    tick at T+2 (bid 1.08290) closes the long at 1.08290."""

    async def run(late: bool) -> list[tuple[str, Decimal, int, str]]:
        b = broker()
        await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
        if not late:
            await b.submit(order("b1", "buy", T, sl="1.08300"))
        await b.on_tick(tick("EURUSD", T + 1, 1.08500, 1.08510))
        await b.on_tick(tick("EURUSD", T + 2, 1.08290, 1.08300))
        await b.on_tick(tick("EURUSD", T + 3, 1.08500, 1.08510))
        if late:
            await b.submit(order("b1", "buy", T, sl="1.08300"))
        await b.on_tick(tick("EURUSD", T + 4, 1.08500, 1.08510))
        return [(d.side, d.price, d.ts, d.reason) for d in b.deals]

    replay = await run(late=False)
    assert replay == [("buy", D("1.08510"), T + 1, "client"), ("sell", D("1.08290"), T + 2, "sl")]
    assert await run(late=True) == replay


def _yen(ts: int, o: float, h: float, lo: float, c: float) -> dict[str, Any]:
    return {**bar("USDJPY", ts, o, c, "1m", None, MIN), "high": h, "low": lo}


async def test_a_yen_stop_at_a_gapped_open_is_converted_at_the_rates_of_that_open() -> None:
    """Long 1 lot USDJPY at 150.002 (150.000 + 2 points); the next bar opens at 149.000, below the stop 149.500: closed
    at 149.000, dated at the open. (149.000 - 150.002) × 100,000 = -100,200 JPY at that open's mid 149.001 →
    -672.4787… → -672.48 USD, what a client sell at that open realizes. Converted at the previous close's mid
    (150.001) it is -668.00."""
    b = broker(BAR)
    await b.on_bar(_yen(T - MIN, 150.000, 150.000, 150.000, 150.000))
    await b.submit(order("u1", "buy", T, sl="149.500", symbol="USDJPY"))
    await b.on_bar(_yen(T, 150.000, 150.000, 150.000, 150.000))
    await b.on_bar(_yen(T + MIN, 149.000, 149.000, 149.000, 149.000))
    opened, closed = b.deals
    assert (opened.price, closed.price, closed.ts, closed.reason) == (D("150.002"), D("149.000"), T + MIN, "sl")
    assert closed.profit == D("-672.48")
    assert b.balance == D("100000") - D("672.48")


async def test_two_level_closes_of_one_instant_have_their_own_deal_tickets() -> None:
    """Bars with partial fills (1 lot a price): the first slice's stop is reached inside its bar (closed at 1.08300,
    dated at the bar's close, T+1m); the second slice fills at the next bar's open (T+1m), already below the stop,
    and is closed at that open, dated T+1m too. Two deals: two tickets (the fill id is ``paper-<ticket>``: a second
    deal with the first one's ticket is never published, and execution and the risk gate keep a position the broker
    does not have)."""
    b = broker({**BAR, "partial_fills": {"max_lots": 1}})
    await b.on_bar(minute(T - MIN, 1.08500, 1.08500, 1.08500, 1.08500))
    await b.submit(order("b1", "buy", T, sl="1.08300", quantity="2"))
    await b.on_bar(minute(T, 1.08500, 1.08500, 1.08250, 1.08250))
    await b.on_bar(minute(T + MIN, 1.08240, 1.08240, 1.08200, 1.08200))
    closes = [d for d in b.deals if d.reason == "sl"]
    assert [(d.price, d.ts) for d in closes] == [(D("1.08300"), T + MIN), (D("1.08240"), T + MIN)]
    assert len({d.ticket for d in b.deals}) == len(b.deals) == 4
    assert len({d.order_ticket for d in closes}) == 2
