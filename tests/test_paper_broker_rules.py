"""The paper broker's fill, margin and swap rules against MT5's, every number worked out by hand.

A reviewer's findings: a margin check blind to accepted orders not filled yet, partial-fill slices off the
lot step, deals on prices from inside the weekend the broker itself calls closed, and a position's roll
judged on another symbol's clock (a bar-open deal dated before the roll after another symbol's bar passed it).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from framework.topology.model import Account, Instrument
from nodes.broker.base import AckStatus, OrderRequest
from nodes.broker.models import PaperParams
from nodes.broker.paper import PaperBroker
from tests.test_paper_broker import DAY, HOUR, MIN, MON, T

D = Decimal
FRIDAY_CLOSE = MON + 4 * DAY + 22 * HOUR
SUNDAY_OPEN = MON + 6 * DAY + 22 * HOUR
INSTRUMENTS = {
    "EURUSD": Instrument(pip=0.0001, digits=5),
    "USDJPY": Instrument(pip=0.01, digits=3),
    "XAUUSD": Instrument(kind="metal", pip=0.01, digits=2),
    "EURGBP": Instrument(pip=0.0001, digits=5),
    "GBPUSD": Instrument(pip=0.0001, digits=5),
}


def broker(params: dict[str, Any] | None = None, **account: Any) -> PaperBroker:
    return PaperBroker(PaperParams.model_validate(params or {}), INSTRUMENTS, Account(**account))


def tick(symbol: str, ts: int, bid: float, ask: float) -> dict[str, Any]:
    return {"symbol": symbol, "ts": ts, "bid": bid, "ask": ask, "source": "test"}


def minute(symbol: str, ts: int, price: float) -> dict[str, Any]:
    return {"symbol": symbol, "timeframe": "1m", "ts": ts, "ts_close": ts + MIN, "open": price, "high": price, "low": price,
            "close": price, "volume": 1, "tick_count": 1, "spread_mean": None, "source": "test"}  # fmt: skip


def order(cid: str, symbol: str, side: str, quantity: Any, ts: int) -> OrderRequest:
    return OrderRequest(cid, f"order-{cid}", symbol, side, D(str(quantity)), ts)


# --------------------------------------------------------------------------- what held (hand arithmetic)


async def test_costs_and_margin_of_a_cross_gold_and_yen_in_a_usd_account() -> None:
    b = broker({"commission": {"per_lot": 3.5, "per_million": 25}}, leverage=30)
    await b.on_tick(tick("EURUSD", T, 1.09995, 1.10005))  # mid 1.10000
    await b.on_tick(tick("GBPUSD", T, 1.29395, 1.29405))  # mid 1.29400
    await b.on_tick(tick("EURGBP", T, 0.85000, 0.85010))
    await b.on_tick(tick("XAUUSD", T, 2650.00, 2650.40))  # mid 2650.20
    await b.on_tick(tick("USDJPY", T, 150.000, 150.020))  # mid 150.010
    for cid, symbol, side, lots in (("g", "EURGBP", "buy", 1), ("x", "XAUUSD", "buy", 0.5), ("j", "USDJPY", "sell", 2)):
        assert (await b.submit(order(cid, symbol, side, lots, T))).status is AckStatus.ACCEPTED
    for symbol, bid, ask in (("EURGBP", 0.85000, 0.85010), ("XAUUSD", 2650.00, 2650.40), ("USDJPY", 150.000, 150.020)):
        await b.on_tick(tick(symbol, T + 1, bid, ask))
    cross, gold, yen = b.deals
    # EURGBP at the ask 0.85010: 85,010 GBP × 1.294 = 110,002.94 USD; 3.5 + 25 × 0.11000294 = 6.2500735
    assert (cross.price, cross.commission) == (D("0.85010"), D("6.25"))
    # gold: 50 oz at the ask 2,650.40 = 132,520 USD; 3.5 × 0.5 + 25 × 0.13252 = 1.75 + 3.313 = 5.063
    assert (gold.price, gold.commission) == (D("2650.40"), D("5.06"))
    # USDJPY sold at the bid: 200,000 × 150.000 JPY / 150.010 = 199,986.67 USD; 7 + 25 × 0.19998667 = 11.9997
    assert (yen.price, yen.commission) == (D("150.000"), D("12.00"))
    # margins: 100,000 EUR / 30 × 1.1 = 3,666.67; 50 oz / 30 × 2,650.20 = 4,417.00; 200,000 USD / 30 = 6,666.67
    assert b.account_view().margin == D("3666.67") + D("4417.00") + D("6666.67")


async def test_a_margin_exactly_at_the_free_margin_is_accepted_a_step_more_is_10019() -> None:
    for lots, status, retcode in ((10, AckStatus.ACCEPTED, 10008), (D("10.01"), AckStatus.REJECTED, 10019)):
        b = broker(balance=10_000, leverage=100)
        await b.on_tick(tick("USDJPY", T, 150.000, 150.000))
        ack = await b.submit(order("x", "USDJPY", "buy", lots, T))  # 10 lots: 1,000,000 USD / 100 = 10,000.00 exactly
        assert (ack.status, ack.retcode) == (status, retcode), ack.message


# --------------------------------------------------------------------------- margin of accepted orders


async def test_an_accepted_order_not_filled_yet_counts_in_the_next_orders_margin_check() -> None:
    """MT5 fills a market order at once, so its next order is checked against the position the first one made. The
    paper broker fills on the next price: an order accepted and not yet filled must count as if it had filled, or two
    orders of one instant each pass on their own and together hold more margin than the account has."""
    b = broker(balance=10_000, leverage=30)
    await b.on_tick(tick("EURUSD", T, 1.10000, 1.10000))
    await b.on_tick(tick("XAUUSD", T, 2000.00, 2000.00))
    first = await b.submit(order("a", "EURUSD", "buy", 2, T))  # 200,000 EUR / 30 × 1.1 = 7,333.33 of 10,000
    second = await b.submit(order("b", "EURUSD", "buy", 2, T))  # 7,333.33 more: 14,666.67 > 10,000
    gold = await b.submit(order("c", "XAUUSD", "buy", 0.5, T))  # 50 oz / 30 × 2,000 = 3,333.33 > 2,666.67 left
    small = await b.submit(order("d", "XAUUSD", "buy", 0.4, T))  # 40 oz: 2,666.67: exactly what is left
    closing = await b.submit(order("e", "EURUSD", "sell", 2, T))  # undoes "a": needs nothing
    assert first.status is AckStatus.ACCEPTED
    assert (second.status, second.retcode) == (AckStatus.REJECTED, 10019), second.message
    assert (gold.status, gold.retcode) == (AckStatus.REJECTED, 10019), gold.message
    assert small.status is AckStatus.ACCEPTED, small.message
    assert closing.status is AckStatus.ACCEPTED, closing.message
    await b.on_tick(tick("EURUSD", T + 1, 1.10000, 1.10000))
    await b.on_tick(tick("XAUUSD", T + 1, 2000.00, 2000.00))
    account = b.account_view()
    assert (account.margin, account.free_margin) == (D("2666.67"), D("7333.33"))


# --------------------------------------------------------------------------- partial fills


async def test_partial_fill_slices_are_on_the_lot_step_and_sum_to_the_order() -> None:
    """max_lots of 0.333 on a 0.01 lot step: slices of 0.33 (0.33, 0.33, 0.33, 0.01), never a 0.001-lot deal that no
    MT5 server makes (below the minimum lot, off the step)."""
    b = broker({"partial_fills": {"max_lots": 0.333}})
    await b.on_tick(tick("EURUSD", T, 1.10000, 1.10010))
    await b.submit(order("p", "EURUSD", "buy", 1, T))
    for n in range(1, 6):
        await b.on_tick(tick("EURUSD", T + n, 1.10000, 1.10010))
    assert [d.lots for d in b.deals] == [D("0.33"), D("0.33"), D("0.33"), D("0.01")]
    assert sum(d.lots for d in b.deals) == D(1) and b.orders["p"].status == "filled"


async def test_a_slice_below_the_minimum_lot_is_the_minimum_lot() -> None:
    b = broker({"partial_fills": {"max_lots": 0.005}})
    await b.on_tick(tick("EURUSD", T, 1.10000, 1.10010))
    await b.submit(order("p", "EURUSD", "buy", 0.02, T))
    for n in range(1, 4):
        await b.on_tick(tick("EURUSD", T + n, 1.10000, 1.10010))
    assert [d.lots for d in b.deals] == [D("0.01"), D("0.01")]


# --------------------------------------------------------------------------- the weekend


async def test_an_order_working_at_fridays_close_fills_after_the_weekend_not_on_a_weekend_price() -> None:
    """The broker refuses orders from Friday 22:00 to Sunday 22:00 UTC (10018): no deal is made there either. A quote
    inside that window (a feed's stray Saturday price) moves the marks but fills nothing."""
    b = broker()
    await b.on_tick(tick("EURUSD", FRIDAY_CLOSE - 2, 1.10000, 1.10010))
    assert (await b.submit(order("w", "EURUSD", "buy", 1, FRIDAY_CLOSE - 1))).status is AckStatus.ACCEPTED
    await b.on_tick(tick("EURUSD", FRIDAY_CLOSE + HOUR, 1.12000, 1.12010))  # Friday 23:00: closed
    await b.on_tick(tick("EURUSD", SUNDAY_OPEN - 1, 1.13000, 1.13010))  # Sunday 21:59:59.999: closed
    assert b.deals == [] and b.orders["w"].status == "accepted"
    await b.on_tick(tick("EURUSD", SUNDAY_OPEN, 1.14000, 1.14010))
    assert [(d.ts, d.price) for d in b.deals] == [(SUNDAY_OPEN, D("1.14010"))]


async def test_a_late_order_skips_the_weekend_prices_it_arrives_after() -> None:
    b = broker()
    await b.on_tick(tick("EURUSD", FRIDAY_CLOSE - 2, 1.10000, 1.10010))
    await b.on_tick(tick("EURUSD", SUNDAY_OPEN - MIN, 1.13000, 1.13010))
    await b.on_tick(tick("EURUSD", SUNDAY_OPEN + MIN, 1.14000, 1.14010))
    await b.submit(order("late", "EURUSD", "sell", 1, FRIDAY_CLOSE - 1))
    assert [(d.ts, d.price) for d in b.deals] == [(SUNDAY_OPEN + MIN, D("1.14000"))]


async def test_bar_open_fills_wait_for_the_first_bar_after_the_weekend() -> None:
    b = broker({"fill_on": "bar_open", "bar_timeframe": "1m"})
    await b.on_bar(minute("EURUSD", FRIDAY_CLOSE - 2 * MIN, 1.10000))
    await b.submit(order("w", "EURUSD", "buy", 1, FRIDAY_CLOSE - MIN))
    await b.on_bar(minute("EURUSD", SUNDAY_OPEN - MIN, 1.13000))  # a bar opening at Sunday 21:59: closed
    assert b.deals == []
    await b.on_bar(minute("EURUSD", SUNDAY_OPEN, 1.14000))
    assert [(d.ts, d.price) for d in b.deals] == [(SUNDAY_OPEN, D("1.14000"))]


# --------------------------------------------------------------------------- the roll, on the position's own prices


SWAP = {"fill_on": "bar_open", "bar_timeframe": "1m", "swap": {"rates": {"default": {"long": -10, "short": -10}}}}
ROLL = MON + 22 * HOUR  # Monday's roll: one night


async def _around_the_roll(other_first: bool, close_before: bool) -> PaperBroker:
    """Long 1 USDJPY from 21:00; an order of 21:59 closes it (``close_before``) or adds 1 lot, filled at the open of the
    21:59 minute, whose bar reaches the broker at 22:00: before or after EURUSD's bar of that minute."""
    b = broker(SWAP)
    await b.on_bar(minute("USDJPY", ROLL - HOUR - MIN, 150.000))
    await b.on_bar(minute("EURUSD", ROLL - HOUR - MIN, 1.10000))
    await b.submit(order("open", "USDJPY", "buy", 1, ROLL - HOUR))
    await b.on_bar(minute("USDJPY", ROLL - HOUR, 150.000))
    await b.on_bar(minute("EURUSD", ROLL - 2 * MIN, 1.10000))
    await b.on_bar(minute("USDJPY", ROLL - 2 * MIN, 150.000))
    await b.submit(order("next", "USDJPY", "sell" if close_before else "buy", 1, ROLL - MIN))
    last = [minute("EURUSD", ROLL - MIN, 1.10000), minute("USDJPY", ROLL - MIN, 150.000)]
    for bar in last if other_first else last[::-1]:
        await b.on_bar(bar)
    await b.on_bar(minute("USDJPY", ROLL, 150.000))
    await b.on_bar(minute("EURUSD", ROLL, 1.10000))
    return b


async def test_a_position_closed_before_the_roll_pays_no_swap_whichever_symbols_bar_comes_first() -> None:
    for other_first in (False, True):
        b = await _around_the_roll(other_first, close_before=True)
        assert [(d.client_order_id, d.ts, d.swap) for d in b.deals] == [("open", ROLL - HOUR, 0), ("next", ROLL - MIN, 0)]
        assert b.balance == D("100000.00") and b.positions == {}


async def test_lots_added_before_the_roll_pay_it_whichever_symbols_bar_comes_first() -> None:
    for other_first in (False, True):
        b = await _around_the_roll(other_first, close_before=False)
        # 2 lots held at 22:00: -10 points × 0.001 × 200,000 = -2,000 JPY / 150.000 = -13.33 USD
        assert b.positions["USDJPY"].swap == D("-13.33"), other_first


async def test_a_roll_not_yet_booked_on_a_position_survives_a_restart() -> None:
    """Saved after EURUSD's bar carried the broker past the roll, before USDJPY's: the restored broker books the
    USDJPY roll on USDJPY's bar, as the uninterrupted one does."""
    import json

    b = broker(SWAP)
    await b.on_bar(minute("USDJPY", ROLL - 3 * MIN, 150.000))
    await b.submit(order("open", "USDJPY", "sell", 3, ROLL - 2 * MIN))
    await b.on_bar(minute("USDJPY", ROLL - 2 * MIN, 150.000))  # short 3 lots from 21:58
    await b.on_bar(minute("EURUSD", ROLL - MIN, 1.10000))  # the broker's time reaches 22:00
    assert b.positions["USDJPY"].swap == 0
    again = broker(SWAP)
    again.restore(json.loads(json.dumps(b.snapshot())))
    for one in (b, again):
        await one.on_bar(minute("USDJPY", ROLL - MIN, 150.000))
    # -10 points × 0.001 × 300,000 = -3,000 JPY / 150.000 = -20.00 USD
    assert again.positions["USDJPY"].swap == b.positions["USDJPY"].swap == D("-20.00")
    assert again.snapshot() == b.snapshot()
