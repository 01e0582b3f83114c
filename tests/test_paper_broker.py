"""The paper broker against hand-computed numbers: fill timing, spread, slippage, commission, partial
fills, swap (Wednesday triple), margin, stop-out, refusals with MT5 return codes, state as JSON."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any

import pytest

from framework.topology.model import Account, Instrument
from nodes.broker.base import AckStatus, OrderRequest
from nodes.broker.models import PaperParams
from nodes.broker.paper import PaperBroker

D = Decimal
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
MON = 1_793_577_600_000  # Monday 2026-11-02 00:00 UTC
T = MON + 10 * HOUR
INSTRUMENTS = {
    "EURUSD": Instrument(pip=0.0001, digits=5),
    "USDJPY": Instrument(pip=0.01, digits=3),
    "XAUUSD": Instrument(kind="metal", pip=0.01, digits=2),
}


def broker(params: dict[str, Any] | None = None, **account: Any) -> PaperBroker:
    return PaperBroker(PaperParams.model_validate(params or {}), INSTRUMENTS, Account(**account))


def tick(symbol: str, ts: int, bid: float, ask: float) -> dict[str, Any]:
    return {"symbol": symbol, "ts": ts, "bid": bid, "ask": ask, "source": "test"}


def order(cid: str, symbol: str, side: str, quantity: Any, ts: int, order_type: str = "market") -> OrderRequest:
    return OrderRequest(cid, f"order-{cid}", symbol, side, D(str(quantity)), ts, order_type)


def bar(symbol: str, ts: int, o: float, c: float, timeframe: str = "1h", spread: float | None = None, length: int = HOUR) -> dict[str, Any]:
    return {"symbol": symbol, "timeframe": timeframe, "ts": ts, "ts_close": ts + length, "open": o, "high": max(o, c),
            "low": min(o, c), "close": c, "volume": 10, "tick_count": 10, "spread_mean": spread, "spread_min": spread,
            "spread_max": spread, "source": "test"}  # fmt: skip


# --------------------------------------------------------------------------- when and at what price


async def test_a_market_order_fills_at_the_first_tick_strictly_after_its_time() -> None:
    b = broker()
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
    buy = await b.submit(order("b1", "EURUSD", "buy", 1, T))
    sell = await b.submit(order("s1", "EURUSD", "sell", 1, T))
    assert buy.status is AckStatus.ACCEPTED and buy.retcode == 10008 and sell.status is AckStatus.ACCEPTED
    await b.on_tick(tick("EURUSD", T, 1.08600, 1.08610))  # the order's own millisecond: information it could have had
    assert b.deals == []
    await b.on_tick(tick("EURUSD", T + 1, 1.08700, 1.08712))
    (bought, sold) = b.deals
    assert (bought.side, bought.price, bought.ts, bought.client_order_id) == ("buy", D("1.08712"), T + 1, "b1")
    assert (sold.side, sold.price, sold.ts) == ("sell", D("1.08700"), T + 1)
    assert bought.slippage == 0 and b.positions == {}  # netting: the buy and the sell cancel out
    assert b.balance == D("100000") - D("12.00")  # the spread: (1.08700 - 1.08712) × 100,000


async def test_an_order_that_arrives_after_a_newer_price_fills_at_that_price() -> None:
    b = broker()
    await b.on_tick(tick("EURUSD", T + 5, 1.08500, 1.08510))
    await b.submit(order("late", "EURUSD", "buy", 1, T))
    assert [(d.price, d.ts) for d in b.deals] == [(D("1.08510"), T + 5)]


async def test_next_bar_open_never_the_signal_bar() -> None:
    b = broker({"fill_on": "bar_open", "bar_timeframe": "1h", "spread": {"source": "fixed", "points": {"default": 10}}})
    signal_bar = T  # the signal was computed on the bar [T, T+1h) and is known at its close
    await b.on_bar(bar("EURUSD", signal_bar, 1.08000, 1.08500))
    await b.submit(order("b", "EURUSD", "buy", 1, signal_bar + HOUR))
    await b.submit(order("s", "EURUSD", "sell", 2, signal_bar + HOUR))
    await b.on_bar(bar("EURUSD", signal_bar, 1.08000, 1.08500))  # the signal's bar again (a resend): no fill
    await b.on_bar(bar("EURUSD", signal_bar + HOUR, 1.09000, 1.09100, timeframe="4h"))  # another timeframe: ignored
    await b.on_tick(tick("EURUSD", signal_bar + HOUR + 1, 1.07, 1.07))  # ticks do not fill in bar_open mode
    assert b.deals == []
    await b.on_bar(bar("EURUSD", signal_bar + HOUR, 1.08600, 1.08400))
    buy, sell = b.deals
    assert (buy.price, buy.ts) == (D("1.08610"), signal_bar + HOUR)  # the open + 10 points of spread
    assert (sell.price, sell.lots) == (D("1.08600"), D("2"))  # the open (bars are bid prices)
    quote = b.quote("EURUSD")
    assert quote is not None and (quote.bid, quote.ts) == (D("1.08400"), signal_bar + 2 * HOUR)  # marked at the close


async def test_a_bars_own_spread_with_source_quote() -> None:
    b = broker({"fill_on": "bar_open", "bar_timeframe": "1m"})
    await b.on_bar(bar("EURUSD", T, 1.08000, 1.08500, timeframe="1m", length=MIN, spread=0.00015))
    await b.submit(order("b", "EURUSD", "buy", 1, T + MIN))
    await b.on_bar(bar("EURUSD", T + MIN, 1.08600, 1.08400, timeframe="1m", length=MIN, spread=0.00015))
    assert b.deals[0].price == D("1.08615")


# --------------------------------------------------------------------------- costs


async def test_spread_slippage_and_commission_by_hand() -> None:
    params = {
        "spread": {"source": "fixed", "points": {"default": 30, "EURUSD": 12}},
        "slippage": {"points": 2, "per_lot": 1},
        "commission": {"per_lot": 3.5, "per_million": 25},
    }
    b = broker(params)
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08501))  # the quote's ask is ignored: fixed spread of 12 points
    await b.submit(order("open", "EURUSD", "buy", 1.5, T))
    await b.on_tick(tick("EURUSD", T + 1, 1.08500, 1.08501))
    # ask 1.08512; slippage 2 + 1 × 1.5 = 3.5 points → 0.000035 on the tick, half to even → 0.00004
    opened = b.deals[0]
    assert opened.price == D("1.08516") and opened.slippage == D("0.00004")
    # commission: 3.5 × 1.5 + 25 × (150,000 × 1.08516 = 162,774 USD) / 1e6 = 5.25 + 4.06935 → 9.32
    assert opened.commission == D("9.32")
    await b.submit(order("close", "EURUSD", "sell", 1.5, T + 1))
    await b.on_tick(tick("EURUSD", T + 2, 1.08700, 1.08800))
    closed = b.deals[1]
    assert closed.price == D("1.08696") and closed.slippage == D("-0.00004")  # the bid, 4 points worse
    assert closed.profit == D("270.00")  # (1.08696 - 1.08516) × 150,000
    assert closed.commission == D("9.33")  # 5.25 + 25 × 163,044 / 1e6 = 9.3261
    assert b.balance == D("100000") + D("270.00") - D("9.32") - D("9.33")
    assert closed.entry == "out" and b.positions == {}


async def test_a_yen_pairs_profit_is_converted_at_the_time_it_is_realized() -> None:
    b = broker({"spread": {"source": "quote"}})
    await b.on_tick(tick("USDJPY", T, 149.500, 149.512))
    await b.submit(order("u1", "USDJPY", "buy", 1, T))
    await b.on_tick(tick("USDJPY", T + 1, 149.500, 149.512))
    await b.submit(order("u2", "USDJPY", "sell", 1, T + 1))
    await b.on_tick(tick("USDJPY", T + 2, 150.000, 150.012))
    # (150.000 - 149.512) × 100,000 = 48,800 JPY at the mid 150.006 → 325.3203… USD
    assert b.deals[1].profit == D("325.32")
    assert b.balance == D("100325.32")


async def test_partial_fills_split_an_order_over_the_next_prices() -> None:
    b = broker({"partial_fills": {"max_lots": 1.0}})
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
    await b.submit(order("big", "EURUSD", "buy", 2.5, T))
    for i, ask in enumerate((1.08520, 1.08530, 1.08540), start=1):
        await b.on_tick(tick("EURUSD", T + i, ask - 0.0001, ask))
    assert [(d.lots, d.price) for d in b.deals] == [(D("1.0"), D("1.08520")), (D("1.0"), D("1.08530")), (D("0.5"), D("1.08540"))]
    assert b.orders["big"].status == "filled" and b.orders["big"].filled == D("2.5")
    assert b.positions["EURUSD"].position.avg_price == D("1.08528")  # (1.0852 + 1.0853 + 0.5 × 1.0854) / 2.5


async def test_a_partial_fill_with_the_rest_cancelled_is_answered_10010() -> None:
    """``rest: cancel`` (MT5's IOC): the first price fills what it can, the rest is cancelled at once."""
    b = broker({"partial_fills": {"max_lots": 0.4, "rest": "cancel"}})
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
    await b.submit(order("ioc", "EURUSD", "buy", 1, T))
    await b.on_tick(tick("EURUSD", T + 1, 1.08500, 1.08520))
    await b.on_tick(tick("EURUSD", T + 2, 1.08500, 1.08530))  # nothing left to fill
    assert [(d.lots, d.price) for d in b.deals] == [(D("0.4"), D("1.08520"))]
    placed = b.orders["ioc"]
    assert (placed.status, placed.filled, placed.retcode, placed.done_ts) == ("cancelled", D("0.4"), 10010, T + 1)
    [notice] = b.take_notices()
    assert (notice.code, notice.retcode, notice.filled, notice.order_id) == ("partial_fill", 10010, D("0.4"), "order-ioc")
    state = await b.state(None, ["ioc"])
    assert [(o.status, o.filled) for o in state.orders] == [("cancelled", D("0.4"))]
    assert [(p.symbol, p.quantity) for p in state.positions] == [("EURUSD", D("0.4"))]


# --------------------------------------------------------------------------- late orders (live delivery)


async def test_an_order_that_arrives_late_fills_on_the_first_price_after_its_time() -> None:
    """Live delivery is asynchronous: the ticks after an order's time may reach the broker before the order. It fills
    on the first of them (and at the conversion rates of then), exactly as when it arrives in time."""
    prices = [("USDJPY", T - 5, 150.000, 150.012), ("EURUSD", T - 3, 1.08500, 1.08510), ("EURUSD", T + 4, 1.08520, 1.08530),
              ("USDJPY", T + 6, 151.000, 151.012), ("EURUSD", T + 9, 1.08600, 1.08610)]  # fmt: skip
    in_time, late = broker({"commission": {"per_million": 30}}), broker({"commission": {"per_million": 30}})
    for b, arrives_after in ((in_time, 2), (late, 5)):  # the order of T: after the prices up to T, or after every price
        for n, (symbol, ts, bid, ask) in enumerate(prices):
            if n == arrives_after:
                await b.submit(order("j", "USDJPY", "buy", 1, T))
                await b.submit(order("e", "EURUSD", "sell", 2, T))
            await b.on_tick(tick(symbol, ts, bid, ask))
        if arrives_after == len(prices):
            await b.submit(order("j", "USDJPY", "buy", 1, T))
            await b.submit(order("e", "EURUSD", "sell", 2, T))
    key = [(d.ticket, d.client_order_id, d.price, d.ts, d.commission) for d in in_time.deals]
    assert key == [(d.ticket, d.client_order_id, d.price, d.ts, d.commission) for d in late.deals]
    assert [(d.client_order_id, d.price, d.ts) for d in in_time.deals] == [("e", D("1.08520"), T + 4), ("j", D("151.012"), T + 6)]
    # commission on 200,000 EUR at 1.08520 = 217,040 USD × 30 / 1e6 = 6.5112 → 6.51
    assert in_time.deals[0].commission == D("6.51")


async def test_tickets_follow_from_the_orders_not_from_arrival() -> None:
    a, b = broker(), broker()
    for x in (a, b):
        await x.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
        await x.on_tick(tick("USDJPY", T, 150.000, 150.012))
    await a.submit(order("one", "EURUSD", "buy", 1, T))
    await a.submit(order("two", "USDJPY", "buy", 1, T))
    await b.submit(order("two", "USDJPY", "buy", 1, T))
    await b.submit(order("one", "EURUSD", "buy", 1, T))
    for x in (a, b):
        await x.on_tick(tick("USDJPY", T + 1, 150.000, 150.012))
        await x.on_tick(tick("EURUSD", T + 2, 1.08500, 1.08510))
    assert sorted((d.client_order_id, d.ticket, d.order_ticket) for d in a.deals) == sorted(
        (d.client_order_id, d.ticket, d.order_ticket) for d in b.deals)  # fmt: skip
    assert a.orders["one"].ticket == b.orders["one"].ticket != a.orders["two"].ticket


async def test_swap_at_each_roll_three_nights_on_wednesday() -> None:
    b = broker({"swap": {"rates": {"EURUSD": {"long": -6.5, "short": 1.2}}, "roll": "22:00"}})
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08500))
    await b.submit(order("l", "EURUSD", "buy", 1, T))
    await b.on_tick(tick("EURUSD", T + 1, 1.08500, 1.08500))
    await b.on_tick(tick("EURUSD", MON + 22 * HOUR - 1, 1.08500, 1.08500))
    assert b.positions["EURUSD"].swap == 0  # not yet 22:00
    await b.on_tick(tick("EURUSD", MON + 22 * HOUR, 1.08500, 1.08500))
    assert b.positions["EURUSD"].swap == D("-6.50")  # 6.5 points × 0.00001 × 100,000
    await b.on_tick(tick("EURUSD", MON + 3 * DAY + 10 * HOUR, 1.08500, 1.08500))  # Thursday: past Tue and Wed rolls
    assert b.positions["EURUSD"].swap == D("-32.50")  # Mon 1 + Tue 1 + Wed 3 nights
    await b.submit(order("c", "EURUSD", "sell", 1, MON + 3 * DAY + 10 * HOUR))
    await b.on_tick(tick("EURUSD", MON + 3 * DAY + 10 * HOUR + 1, 1.08500, 1.08500))
    assert b.deals[-1].swap == D("-32.50") and b.balance == D("99967.50") and b.positions == {}


async def test_swap_of_a_short_over_a_weekend_and_a_partial_close() -> None:
    b = broker({"swap": {"rates": {"default": {"long": -6.5, "short": 1.2}}, "roll": "22:00"}})
    friday = MON + 4 * DAY + 10 * HOUR
    await b.on_tick(tick("EURUSD", friday, 1.08500, 1.08500))
    await b.submit(order("s", "EURUSD", "sell", 2, friday))
    await b.on_tick(tick("EURUSD", friday + 1, 1.08500, 1.08500))
    await b.on_tick(tick("EURUSD", friday + 3 * DAY, 1.08500, 1.08500))  # Monday 10:00: Fri roll 1 night, Sat and Sun none
    assert b.positions["EURUSD"].swap == D("2.40")  # 1.2 × 2 lots
    await b.submit(order("half", "EURUSD", "buy", 0.5, friday + 3 * DAY))
    await b.on_tick(tick("EURUSD", friday + 3 * DAY + 1, 1.08500, 1.08500))
    assert b.deals[-1].swap == D("0.60") and b.positions["EURUSD"].swap == D("1.80")  # realized pro rata


# --------------------------------------------------------------------------- margin, stop-out, refusals


async def test_margin_is_notional_over_leverage_in_the_account_currency() -> None:
    b = broker(balance=10_000, leverage=30)
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
    await b.on_tick(tick("XAUUSD", T, 2650.00, 2650.30))
    refused = await b.submit(order("big", "EURUSD", "buy", 2.8, T))  # 280,000 EUR / 30 × 1.08505 = 10,127.13 USD
    assert (refused.status, refused.retcode) == (AckStatus.REJECTED, 10019)
    assert (await b.submit(order("ok", "EURUSD", "buy", 2, T))).status is AckStatus.ACCEPTED
    await b.on_tick(tick("EURUSD", T + 1, 1.08500, 1.08510))
    account = b.account_view()
    assert account.margin == D("7233.67")  # 200,000 / 30 × 1.08505 = 7,233.666…
    gold = await b.submit(order("gold", "XAUUSD", "buy", 1, T + 1))  # 100 oz / 30 × 2,650.15 = 8,833.83 > free margin
    assert (gold.status, gold.retcode) == (AckStatus.REJECTED, 10019)
    reducing = await b.submit(order("reduce", "EURUSD", "sell", 2, T + 1))  # closing needs no margin
    assert reducing.status is AckStatus.ACCEPTED


async def test_stop_out_closes_the_position_when_equity_falls_below_half_the_margin() -> None:
    b = broker(balance=10_000, leverage=30, stop_out=0.5)
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
    await b.submit(order("long", "EURUSD", "buy", 2.5, T))
    await b.on_tick(tick("EURUSD", T + 1, 1.08500, 1.08510))
    await b.on_tick(tick("EURUSD", T + 2, 1.07000, 1.07010))
    # equity 10,000 + (1.07000 - 1.08510) × 250,000 = 6,225.00; margin 250,000 / 30 × 1.07005 = 8,917.08: level 0.698
    assert "EURUSD" in b.positions and b.take_notices() == []
    await b.on_tick(tick("EURUSD", T + 3, 1.05000, 1.05010))
    # equity 10,000 - 8,775.00 = 1,225.00; margin 8,750.42: level 0.14 < 0.5 → closed at the bid
    assert b.positions == {}
    closing = b.deals[-1]
    assert (closing.reason, closing.side, closing.price, closing.profit) == ("stop_out", "sell", D("1.05000"), D("-8775.00"))
    assert b.balance == D("1225.00")
    (notice,) = b.take_notices()
    assert notice.code == "stop_out" and notice.symbol == "EURUSD" and "0.1400" in notice.message


async def long_eur_and_jpy(b: PaperBroker) -> None:
    """Long 4 lots of EURUSD at 1.10000 and 1 lot of USDJPY at 150.000, both filled at T + 1 ms."""
    await b.on_tick(tick("EURUSD", T, 1.10000, 1.10000))
    await b.on_tick(tick("USDJPY", T, 150.000, 150.000))
    await b.submit(order("eur", "EURUSD", "buy", 4, T))
    await b.submit(order("jpy", "USDJPY", "buy", 1, T))
    await b.on_tick(tick("EURUSD", T + 1, 1.10000, 1.10000))
    await b.on_tick(tick("USDJPY", T + 1, 150.000, 150.000))


async def test_stop_out_closes_the_worst_position_first_and_stops_when_the_level_recovers() -> None:
    b = broker(balance=10_000, leverage=100, stop_out=0.5)
    await long_eur_and_jpy(b)
    await b.on_tick(tick("EURUSD", T + 2, 1.08000, 1.08000))
    # EUR: -0.02 × 400,000 = -8,000; margin 4,320 + 1,000 = 5,320; equity 2,000 → 0.376: the EURUSD loss goes first,
    # then 2,000 equity over 1,000 margin is 2.0: USDJPY stays
    assert list(b.positions) == ["USDJPY"] and b.balance == D("2000.00")


def _deals(b: PaperBroker) -> list[tuple[Any, ...]]:
    return [(d.ts, d.symbol, d.side, d.lots, d.price, d.profit, d.reason) for d in b.deals]


async def test_a_late_order_is_judged_on_the_prices_of_its_own_time() -> None:
    """Live delivery: an order of T+1 s reaches the broker after a USDJPY price of T+2 s that would leave too little free
    margin. It is judged as a replay judges it (the margin check at T+1 s knew USDJPY at 150): accepted, the same deals."""

    async def opened(b: PaperBroker) -> None:
        await b.on_tick(tick("EURUSD", T - 2_000, 1.08500, 1.08510))
        await b.on_tick(tick("USDJPY", T - 2_000, 150.000, 150.012))
        await b.submit(order("jpy", "USDJPY", "buy", 1, T - 2_000))
        await b.on_tick(tick("USDJPY", T - 1_000, 150.000, 150.012))  # long 1 lot at 150.012: margin 3,333.33
        await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))

    eur = order("eur", "EURUSD", "buy", 4, T + 1_000)  # margin 400,000 / 30 × 1.08505 = 14,467.33
    crash = tick("USDJPY", T + 2_000, 140.000, 140.012)  # USDJPY's loss at 140: 7,151.12; 9,515.55 free, not enough
    replay, late = broker(balance=20_000, leverage=30), broker(balance=20_000, leverage=30)
    for b in (replay, late):
        await opened(b)
    replayed = await replay.submit(eur)
    await replay.on_tick(crash)
    await late.on_tick(crash)
    delivered = await late.submit(eur)  # the order of T+1 s arrives after the price of T+2 s
    for b in (replay, late):
        await b.on_tick(tick("EURUSD", T + 3_000, 1.08500, 1.08510))
    assert replayed.status is AckStatus.ACCEPTED
    assert (delivered.status, delivered.retcode) == (replayed.status, replayed.retcode), delivered.message
    assert _deals(late) == _deals(replay) and late.balance == replay.balance and len(late.deals) == 2


async def test_a_late_price_never_stops_out_at_a_price_from_after_its_own_time() -> None:
    """A USDJPY price of T+5 arrives after a EURUSD price of T+10 (live delivery across subjects). The stop-out it sets off
    is judged at the broker's time (T+10) on prices none of which is later, and dated then: as a replay in time order
    stops out (the EURUSD fall of T+10 does it), never a deal of T+5 at the EURUSD price of T+10."""
    replay, late = (broker(balance=10_000, leverage=100, stop_out=0.5) for _ in range(2))
    for b in (replay, late):
        await long_eur_and_jpy(b)
    fall = tick("EURUSD", T + 10, 1.08600, 1.08600)  # EUR -5,600; equity 4,400 over margin 5,344: 0.82, no stop-out alone
    yen = tick("USDJPY", T + 5, 146.000, 146.000)  # JPY -2,739.73; with the EURUSD fall: 1,660.27 / 5,344 = 0.31
    await replay.on_tick(yen)
    await replay.on_tick(fall)
    await late.on_tick(fall)
    assert late.take_notices() == []
    await late.on_tick(yen)
    (closing,) = [d for d in late.deals if d.reason == "stop_out"]
    assert (closing.ts, closing.symbol, closing.price) == (T + 10, "EURUSD", D("1.08600"))
    assert _deals(late) == _deals(replay) and late.balance == replay.balance == D("4400.00")
    assert list(late.positions) == ["USDJPY"]


@pytest.mark.parametrize(
    ("symbol", "quantity", "ts", "order_type", "retcode"),
    [
        ("GBPNOK", 1, T, "market", 10013),  # unknown symbol
        ("EURUSD", 0.001, T, "market", 10014),  # below the minimum lot
        ("EURUSD", 0.015, T, "market", 10014),  # not on the lot step
        ("EURUSD", 0, T, "market", 10014),
        ("EURUSD", -1, T, "market", 10014),
        ("EURUSD", 101, T, "market", 10014),  # above the maximum
        ("EURUSD", 1, MON + 5 * DAY + 12 * HOUR, "market", 10018),  # Saturday
        ("EURUSD", 1, T + 11 * MIN, "market", 10018),  # no price for 11 minutes
        ("USDJPY", 1, T, "market", 10018),  # no price ever
        ("EURUSD", 1000, T, "market", 10014),
        ("EURUSD", 99, T, "market", 10019),  # 9.9M EUR / 30 = 358k USD of margin
        ("EURUSD", 1, T, "limit", 10035),
    ],
)
async def test_refusals_carry_mt5_return_codes(symbol: str, quantity: Any, ts: int, order_type: str, retcode: int) -> None:
    b = broker()
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
    ack = await b.submit(order("x", symbol, "buy", quantity, ts, order_type))
    assert (ack.status, ack.retcode) == (AckStatus.REJECTED, retcode), ack.message
    await b.on_tick(tick("EURUSD", T + 1, 1.08500, 1.08510))
    assert b.deals == [] and b.orders["x"].status == "rejected"


async def test_a_client_order_id_fills_once() -> None:
    b = broker()
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
    first = await b.submit(order("same", "EURUSD", "buy", 1, T))
    again = await b.submit(order("same", "EURUSD", "buy", 1, T))
    await b.on_tick(tick("EURUSD", T + 1, 1.08500, 1.08510))
    later = await b.submit(order("same", "EURUSD", "buy", 1, T + 1))
    assert first.status is AckStatus.ACCEPTED and again.status is later.status is AckStatus.DUPLICATE
    assert len(b.deals) == 1


# --------------------------------------------------------------------------- state


async def test_snapshot_and_restore_carry_the_account_through_json() -> None:
    params = {"swap": {"rates": {"default": {"long": -6.5, "short": 1.2}}}, "commission": {"per_lot": 3}}
    b = broker(params)
    await b.on_tick(tick("EURUSD", T, 1.08500, 1.08510))
    await b.on_tick(tick("USDJPY", T, 150.000, 150.012))
    await b.submit(order("e", "EURUSD", "buy", 1, T))
    await b.submit(order("j", "USDJPY", "sell", 2, T))
    await b.on_tick(tick("EURUSD", T + 1, 1.08500, 1.08510))
    await b.submit(order("waiting", "EURUSD", "sell", 0.5, T + 1))
    await b.on_tick(tick("EURUSD", T + DAY, 1.08600, 1.08610))  # a roll passed; "waiting" filled here too
    await b.on_tick(tick("USDJPY", T + DAY, 150.100, 150.112))
    await b.submit(order("open", "USDJPY", "buy", 0.3, T + DAY))
    state = json.loads(json.dumps(b.snapshot()))

    again = broker(params)
    again.restore(state)
    assert again.snapshot() == state
    for one in (b, again):  # both go on identically
        await one.on_tick(tick("USDJPY", T + DAY + 5, 149.000, 149.012))
        await one.submit(order("close", "EURUSD", "sell", 0.5, T + DAY + 5))
        await one.on_tick(tick("EURUSD", T + DAY + 6, 1.09000, 1.09010))
    assert again.snapshot() == b.snapshot()
    assert again.account_view() == b.account_view()
    assert [d.ticket for d in again.deals] == [d.ticket for d in b.deals] and len(b.deals) == 5


# --------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("rest", ["next", "cancel"])
async def test_a_prune_forgets_exactly_the_orders_a_full_scan_would(rest: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The finished orders a prune forgets come off a heap: at every prune of a random run, the orders kept (and their
    order) are those of the plain rule, also with rejected orders submitted again under their id, late and partly
    filled orders, and restored states whose done_ts is before the order's ts, 0 or missing."""
    rng = random.Random(20261102)
    seen = {"prunes": 0, "removed": 0, "by_done_ts_before_ts": 0, "resubmitted": 0, "moved": 0}
    prune = PaperBroker._prune

    def checked(self: PaperBroker) -> None:
        cutoff = None if self.now is None or self.history_ms is None else self.now - self.history_ms
        rule = [(k, id(o)) for k, o in self.orders.items()
                if cutoff is None or o.working or (o.done_ts or o.ts) >= cutoff]  # fmt: skip
        kept = {i for _, i in rule}
        gone = [o for o in self.orders.values() if id(o) not in kept]
        prune(self)
        assert [(k, id(o)) for k, o in self.orders.items()] == rule
        seen["prunes"] += 1
        seen["removed"] += len(gone)
        seen["by_done_ts_before_ts"] += sum(1 for o in gone if cutoff is not None and o.ts >= cutoff)

    monkeypatch.setattr(PaperBroker, "_prune", checked)
    params = {"history": "3h", "partial_fills": {"max_lots": 0.5, "rest": rest}}
    b = broker(params)
    now, ids = T, ["o0"]
    for step in range(4000):
        r = rng.random()
        if r < 0.45:
            now += rng.randint(1, 20) * MIN
            mid = 1.085 + rng.randint(-300, 300) / 100_000
            await b.on_tick(tick("EURUSD", now, mid, mid + 0.0001))
        elif r < 0.97:
            cid = rng.choice(ids) if rng.random() < 0.3 else f"o{step}"
            ids.append(cid)
            was = b.orders.get(cid)
            symbol = "GBPNOK" if rng.random() < 0.05 else "EURUSD"
            quantity = rng.choice([0.1, 0.5, 1, 1.3, 0.001])
            await b.submit(order(cid, symbol, rng.choice(["buy", "sell"]), quantity, now - rng.randint(0, 3) * MIN))
            seen["resubmitted"] += was is not None and was.status == "rejected" and b.orders[cid] is not was
        elif r < 0.985:
            finished = [o for o in b.orders.values() if not o.working]
            if finished:  # no path moves a finished order's time today: the prune re-checks the rule all the same
                moved = rng.choice(finished)
                moved.done_ts = (moved.done_ts or moved.ts) + rng.randint(0, 2 * HOUR)
                seen["moved"] += 1
        else:
            state = json.loads(json.dumps(b.snapshot()))
            for o in state["orders"]:
                if o["status"] not in ("accepted", "partially_filled"):
                    o["done_ts"] = rng.choice([o["done_ts"], o["ts"] - rng.randint(0, 4 * HOUR), 0, None])
            b = broker(params)
            b.restore(state)
    assert seen["prunes"] > 50 and seen["removed"] > 500
    assert seen["by_done_ts_before_ts"] > 0 and seen["resubmitted"] > 0 and seen["moved"] > 0
