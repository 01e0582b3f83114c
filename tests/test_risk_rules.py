"""The risk library's pieces alone: ATR against TA-Lib, sizing against hand-computed numbers, exposure per
currency, each rule at its limit and past it, the blackout window, the book built from order events."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pytest
import talib

from framework.topology.model import Instrument
from nodes.risk import rules as R
from nodes.risk.atr import WilderATR
from nodes.risk.book import Book, Quote
from nodes.risk.calendar import Blackout
from nodes.risk.exposure import currency_exposure, gross_notional, notional
from nodes.risk.sizing import fixed_size, pip_value, risk_size, stop_distance
from nodes.risk.state import StateOfRecord, TradingState, breach
from nodes.trading.instruments import Rules, VolumeError
from nodes.trading.money import MissingRate, Rates

D = Decimal
INSTRUMENTS = {
    "EURUSD": Instrument(pip=0.0001, digits=5),
    "USDJPY": Instrument(pip=0.01, digits=3),
    "EURJPY": Instrument(pip=0.01, digits=3),
    "GBPUSD": Instrument(pip=0.0001, digits=5),
    "XAUUSD": Instrument(kind="metal", pip=0.01, digits=2),
}
RULES = {s: Rules.of(s, i) for s, i in INSTRUMENTS.items()}


def rates(**mids: str) -> Rates:
    out = Rates((s, r.base, r.quote) for s, r in RULES.items())
    for symbol, mid in mids.items():
        out.update(symbol, mid)
    return out


# --------------------------------------------------------------------------- ATR


@pytest.mark.parametrize("period", [1, 5, 14])
def test_atr_matches_talib(period: int) -> None:
    rng = np.random.default_rng(period)
    close = 1.1 + np.cumsum(rng.normal(0, 0.001, 400))
    high = close + rng.uniform(0, 0.002, 400)
    low = close - rng.uniform(0, 0.002, 400)
    expected = talib.ATR(high, low, close, period)
    atr = WilderATR(period)
    got = np.array([np.nan if (v := atr.update(float(h), float(lo), float(c), i)) is None else v
                    for i, (h, lo, c) in enumerate(zip(high, low, close))])  # fmt: skip
    assert np.array_equal(np.isnan(got), np.isnan(expected))  # the first value after `period` true ranges, as TA-Lib
    np.testing.assert_allclose(got[period:], expected[period:], rtol=1e-12)
    again = WilderATR.from_snapshot(atr.snapshot())
    assert again.update(2.0, 1.0, 1.5, 400) == atr.update(2.0, 1.0, 1.5, 400)
    assert atr.update(9.0, 0.0, 5.0, 400) == atr.value  # a bar at or before the last one is a repeat: skipped


# --------------------------------------------------------------------------- sizing, by hand


def test_pip_values_in_the_account_currency() -> None:
    r = rates(EURUSD="1.08", USDJPY="150", XAUUSD="2650")
    assert pip_value(RULES["EURUSD"], r, "USD") == D("10")  # 0.0001 × 100,000 USD
    assert pip_value(RULES["USDJPY"], r, "USD") == D(1000) / D(150)  # 0.01 × 100,000 JPY = 1,000 JPY = 6.67 USD
    assert pip_value(RULES["XAUUSD"], r, "USD") == D("1")  # 0.01 × 100 oz
    assert pip_value(RULES["USDJPY"], r, "JPY") == D("1000")


def test_sizing_eurusd_by_hand() -> None:
    """1 % of 100,000 USD is 1,000 USD; a 20-pip stop costs 0.0020 × 100,000 = 200 USD a lot: 5 lots."""
    distance = stop_distance(RULES["EURUSD"], 0.001, 2.0)
    assert distance == D("0.00200")
    size = risk_size(D(100_000), 0.01, distance, RULES["EURUSD"], rates(EURUSD="1.08"), "USD")
    assert (size.lots, size.risk, size.loss_per_lot) == (D("5"), D("1000.00"), D("200.00000"))


def test_sizing_usdjpy_converts_the_yen_stop_to_dollars() -> None:
    """A 27-pip stop costs 0.27 × 100,000 = 27,000 JPY a lot = 180 USD at 150; 1,000 USD / 180 = 5.555… → 5.55 lots."""
    size = risk_size(D(100_000), 0.01, D("0.270"), RULES["USDJPY"], rates(USDJPY="150.00"), "USD")
    assert size.lots == D("5.55") and size.raw == D(150_000) / D(27_000)
    assert size.loss_per_lot == D(27_000) / D(150)


def test_sizing_eurjpy_a_cross_in_dollars() -> None:
    """1,000 USD is 150,000 JPY at USDJPY 150; a 40-pip stop costs 40,000 JPY a lot: 3.75 lots."""
    assert risk_size(D(100_000), 0.01, D("0.40"), RULES["EURJPY"], rates(USDJPY="150", EURJPY="162"), "USD").lots == D("3.75")


def test_sizing_xauusd_contract_of_100_ounces() -> None:
    """A 6.30 USD stop costs 6.30 × 100 oz = 630 USD a lot; 1,000 / 630 = 1.587 → 1.58 lots."""
    size = risk_size(D(100_000), 0.01, D("6.30"), RULES["XAUUSD"], rates(XAUUSD="2650"), "USD")
    assert (size.lots, size.loss_per_lot) == (D("1.58"), D("630.00"))


def test_sizing_limits() -> None:
    eurusd, r = RULES["EURUSD"], rates(EURUSD="1.08")
    with pytest.raises(VolumeError, match="below the minimum"):
        risk_size(D(100), 0.01, D("0.0020"), eurusd, r, "USD")  # 1 USD of risk: 0.005 lots
    huge = risk_size(D(100_000_000), 0.01, D("0.0001"), eurusd, r, "USD")
    assert huge.capped and huge.lots == D(100)  # capped at max_lot, never refused for being big
    with pytest.raises(VolumeError):
        risk_size(D(100_000), 0.01, D(0), eurusd, r, "USD")
    with pytest.raises(MissingRate):
        risk_size(D(100_000), 0.01, D("0.270"), RULES["USDJPY"], rates(), "USD")
    assert fixed_size(0.129, eurusd).lots == D("0.12")


# --------------------------------------------------------------------------- exposure


def test_long_eurusd_and_long_eurjpy_is_twice_the_eur() -> None:
    r = rates(EURUSD="1.08", USDJPY="150", EURJPY="162")
    one = currency_exposure({"EURUSD": D(1)}, RULES, r, "USD")
    assert one == {"EUR": D("108000.00"), "USD": D("-108000.00")}
    both = currency_exposure({"EURUSD": D(1), "EURJPY": D(1)}, RULES, r, "USD")
    assert both["EUR"] == 2 * one["EUR"] == D("216000")
    assert both["JPY"] == D(-100_000) * D(162) / D(150)  # -108,000 USD of yen
    assert both["USD"] == D("-108000")


def test_a_usdjpy_short_adds_to_the_usd_short() -> None:
    r = rates(EURUSD="1.08", USDJPY="150")
    before = currency_exposure({"EURUSD": D(1)}, RULES, r, "USD")
    after = currency_exposure({"EURUSD": D(1), "USDJPY": D(-1)}, RULES, r, "USD")
    assert before["USD"] == D("-108000") and after["USD"] == D("-208000")  # short 100,000 USD more
    assert after["JPY"] == D("100000")
    assert gross_notional({"EURUSD": D(1), "USDJPY": D(-1)}, RULES, r, "USD") == D("208000")
    assert notional(D("-2"), RULES["XAUUSD"], rates(XAUUSD="2650"), "USD") == D("530000")  # 200 oz


def test_exposure_needs_prices() -> None:
    with pytest.raises(MissingRate):
        currency_exposure({"EURJPY": D(1)}, RULES, rates(EURJPY="162"), "USD")  # no way from JPY to USD yet


# --------------------------------------------------------------------------- each rule at its limit and past it


def test_stale_signal_at_and_past_its_ttl() -> None:
    assert R.stale(1_000, 500, 1_499, 5_000).ok
    past = R.stale(1_000, 500, 1_500, 5_000)  # stale from ts + ttl on
    assert not past.ok and "stale signal" in past.reason
    assert R.stale(10_000, 500, 5_000, 5_000).ok
    assert "from the future" in R.stale(10_001, 500, 5_000, 5_000).reason


def test_spread_at_and_past_the_limit() -> None:
    pip = D("0.0001")
    assert R.spread(D("1.08000"), D("1.08030"), pip, 3.0, False).ok
    wide = R.spread(D("1.08000"), D("1.08031"), pip, 3.0, False)
    assert not wide.ok and wide.reason == "spread 3.1 pips is wider than 3" and wide.detail["spread_pips"] == 3.1
    assert not R.spread(D("1.08"), None, pip, 3.0, False).ok  # a bar without spread: unknown, refused
    assert R.spread(D("1.08"), None, pip, 3.0, True).ok


def test_symbol_exposure_at_and_past_the_limit() -> None:
    assert R.symbol_exposure("EURUSD", D("108000"), D(0), 108_000).ok
    past = R.symbol_exposure("EURUSD", D("108000.01"), D(0), 108_000)
    assert not past.ok and "EURUSD exposure 108,000.01 would exceed 108,000.00" == past.reason
    assert R.symbol_exposure("EURUSD", D("200000"), D("300000"), 108_000).ok  # shrinking an over-limit position


def test_currency_exposure_at_and_past_the_limit() -> None:
    after = {"EUR": D("216000"), "USD": D("-108000")}
    assert R.currency_exposure({}, after, 216_000).ok
    past = R.currency_exposure({}, after, 215_999.99)
    assert not past.ok and past.detail["over"] == ["EUR"] and past.reason.startswith("EUR exposure 216,000.00")
    assert R.currency_exposure({"EUR": D("300000")}, after, 200_000).ok  # the order reduced the EUR


def test_open_positions_leverage_and_confidence() -> None:
    assert R.open_positions(2, 1, 2).ok and not R.open_positions(3, 2, 2).ok
    assert R.open_positions(3, 3, 2).ok  # not growing
    assert R.leverage(D(1_000_000), D(0), D(100_000), 10).ok
    assert not R.leverage(D("1000000.01"), D(0), D(100_000), 10).ok
    assert not R.leverage(D(1), D(0), D(0), 10).ok
    assert R.confidence(0.6, 0.6).ok and "below" in R.confidence(0.59, 0.6).reason


def test_losses_at_and_past_the_limit() -> None:
    assert R.daily_loss(D(100_000), D(97_000), 0.03).ok
    assert "daily loss 3.001% is past the 3% limit" == R.daily_loss(D(100_000), D(96_999), 0.03).reason
    assert R.drawdown(D(120_000), D(108_000), 0.10).ok
    assert not R.drawdown(D(120_000), D("107999.99"), 0.10).ok


def test_throttle_slides() -> None:
    throttle = R.Throttle(2, 60_000)
    for t in (0, 10_000):
        assert throttle.check(t).ok
        throttle.record(t)
    assert "throttled: 2 approvals" in throttle.check(59_999).reason
    assert throttle.check(60_000).ok  # the first left the window


def test_trading_state_rule() -> None:
    active, reducing, halted = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED
    assert R.trading_state(active, True, False).ok
    assert not R.trading_state(reducing, True, False).ok
    assert R.trading_state(reducing, False, True).ok and R.trading_state(reducing, True, True).ok  # the caller trims
    assert R.trading_state(halted, False, True).reason == "trading is halted"
    current = StateOfRecord(TradingState.HALTED, "operator", "x", 1)
    assert breach(current, TradingState.REDUCING, "daily_loss", "y", 2) is None  # never less strict
    assert breach(StateOfRecord(), TradingState.REDUCING, "daily_loss", "y", 2).state is TradingState.REDUCING


def test_calendar_window() -> None:
    blackout = Blackout(["high"], before_ms=900_000, after_ms=900_000)
    release = 10_000_000
    assert blackout.add({"type": "economic_calendar", "ts": release, "series": "USD.nfp", "country": "USD", "impact": "high", "title": "NFP"})
    assert not blackout.add({"type": "economic_calendar", "ts": release, "series": "USD.x", "country": "USD", "impact": "low"})
    assert not blackout.add({"type": "fred_indicators", "ts": release, "series": "DFF", "impact": "high"})
    for now, blocked in ((release - 900_001, False), (release - 900_000, True), (release + 900_000, True), (release + 900_001, False)):
        assert bool(blackout.blocking(["EUR", "USD"], now)) is blocked, now
    assert not blackout.blocking(["EUR", "JPY"], release)  # not the pair's currencies
    blackout.add({"type": "economic_calendar", "ts": release, "series": "G7", "impact": "high"})  # no country: all
    assert [r.series for r in blackout.blocking(["EUR", "JPY"], release)] == ["G7"]
    blackout.prune(release + 900_001)
    assert len(blackout) == 0


# --------------------------------------------------------------------------- the book


def event(status: str, filled: float = 0.0, avg: float | None = None, *, order: str = "o-1", decision: str = "d-1",
          side: str = "buy", qty: float = 1.0, symbol: str = "EURUSD", ts: int = 1) -> dict:  # fmt: skip
    out = {"order_id": order, "client_order_id": order, "signal_id": "s", "decision_id": decision, "symbol": symbol,
           "side": side, "order_type": "market", "quantity": qty, "status": status, "ts": ts, "filled_quantity": filled}  # fmt: skip
    if avg is not None:
        out["avg_price"] = avg
    return out


def test_book_counts_pending_until_filled_and_each_fill_once() -> None:
    book, r = Book(RULES, "USD", D(100_000)), rates(EURUSD="1.08")
    book.approve("d-1", "EURUSD", "buy", D(1), 0, "s")
    assert book.net("EURUSD") == 1 and book.filled("EURUSD") == 0
    book.on_order_event(event("submitted"), r)
    book.on_order_event(event("partially_filled", 0.4, 1.1), r)
    assert (book.filled("EURUSD"), book.net("EURUSD")) == (D("0.4"), D(1))
    book.on_order_event(event("partially_filled", 0.4, 1.1), r)  # the same event again: nothing more
    book.on_order_event(event("filled", 1.0, 1.16), r)  # the rest at 1.2 (cumulative average 1.16)
    assert book.filled("EURUSD") == 1 and not book.pending and book.positions["EURUSD"].avg_price == D("1.16")
    book.approve("d-2", "EURUSD", "sell", D(1), 0, "s2")
    assert book.net("EURUSD") == 0
    book.on_order_event(event("filled", 1.0, 1.17, order="o-2", decision="d-2", side="sell"), r)
    assert book.balance() == D("100000") + D("1000.00")  # (1.17 - 1.16) × 100,000
    book.approve("d-3", "EURUSD", "buy", D(2), 0, "s3")
    book.on_order_event(event("rejected", order="o-3", decision="d-3", qty=2), r)
    assert not book.pending and book.net("EURUSD") == 0
    commission = {"fill_id": "f-o-2", "order_id": "o-2", "symbol": "EURUSD", "side": "sell", "quantity": 1.0, "price": 1.17,
                  "ts": 2, "commission": 3.5}  # fmt: skip
    assert book.on_fill(commission, r) and book.on_fill(commission, r) is None  # the fill of o-2, counted already: its commission only
    assert book.balance() == D("100996.50") and book.filled("EURUSD") == 0


def test_book_takes_the_swap_a_fill_realized_into_the_balance_once() -> None:
    """The broker's balance holds the swap a closing deal realized (fill.v1 ``swap``): so must the gate's."""
    book, r = Book(RULES, "USD", D(100_000)), rates(EURUSD="1.08")
    book.on_fill(fill_of("o-1", "f1", 1.0, 1.1), r)
    closing = {**fill_of("o-2", "f2", 1.0, 1.1, side="sell"), "commission": 3.5, "swap": -19.5}
    assert book.on_fill(closing, r) and book.on_fill(closing, r) is None
    assert book.balance() == D("100000") - D("3.50") - D("19.50")


def fill_of(order: str, fill_id: str, qty: float, price: float, side: str = "buy", symbol: str = "EURUSD") -> dict:
    return {"fill_id": fill_id, "order_id": order, "symbol": symbol, "side": side, "quantity": qty, "price": price, "ts": 1,
            "commission": 0.0}  # fmt: skip


def test_a_lot_is_counted_once_whether_its_fill_or_its_order_event_comes_first() -> None:
    r = rates(EURUSD="1.08")
    fill_first = Book(RULES, "USD", D(100_000))
    fill_first.on_fill(fill_of("o-1", "f1", 0.4, 1.1), r)
    fill_first.on_order_event(event("partially_filled", 0.4, 1.1), r)
    fill_first.on_fill(fill_of("o-1", "f2", 0.6, 1.2), r)
    fill_first.on_order_event(event("filled", 1.0, 1.16), r)
    event_first = Book(RULES, "USD", D(100_000))
    event_first.on_order_event(event("filled", 1.0, 1.16), r)
    event_first.on_fill(fill_of("o-1", "f1", 0.4, 1.1), r)
    event_first.on_fill(fill_of("o-1", "f2", 0.6, 1.2), r)
    for book in (fill_first, event_first):
        assert (book.filled("EURUSD"), book.positions["EURUSD"].avg_price) == (D(1), D("1.16"))


def test_a_fill_no_order_of_ours_caused_moves_the_position() -> None:
    """A stop loss, a take profit or a stop-out at the broker: a fill with an order id the gate never approved."""
    book, r = Book(RULES, "USD", D(100_000)), rates(EURUSD="1.08")
    book.on_order_event(event("filled", 2.0, 1.1, qty=2.0), r)
    book.on_fill(fill_of("sl-77", "deal-77", 2.0, 1.09, side="sell"), r)
    assert book.filled("EURUSD") == 0 and book.balance() == D(98_000)  # (1.09 - 1.10) × 200,000
    with pytest.raises(ValueError, match="unknown symbol"):
        book.on_fill(fill_of("x", "f9", 1.0, 1.0, symbol="BTCUSD"), r)


def test_book_equity_marks_positions_and_needs_their_prices() -> None:
    book, r = Book(RULES, "USD", D(100_000)), rates(USDJPY="150")
    book.on_order_event(event("filled", 1.0, 150.0, symbol="USDJPY"), r)
    with pytest.raises(MissingRate):
        book.equity({}, r)
    quotes = {"USDJPY": Quote(D("150.30"), D("150.32"), 2, "tick")}
    assert book.equity(quotes, r) == D(100_000) + D("0.30") * 100_000 / D(150)  # long marked at the bid, yen to dollars
    restored = Book(RULES, "USD", D(0))
    restored.restore(book.snapshot())
    assert restored.equity(quotes, r) == book.equity(quotes, r)


def test_book_reconciles_with_the_broker_without_counting_a_fill_twice() -> None:
    book, r = Book(RULES, "USD", D(100_000)), rates(EURUSD="1.08")
    book.approve("d-1", "EURUSD", "buy", D(2), 0, "sig-1")
    state = {
        "ts": 5, "account": {"currency": "USD", "balance": 99_990.0, "equity": 100_100.0, "margin": 7000.0},
        "positions": [{"symbol": "EURUSD", "quantity": 1.0, "avg_price": 1.08}, {"symbol": "BTCUSD", "quantity": 1.0, "avg_price": 1.0}],
        "orders": [{"order_id": book.pending["d-1"].client_order_id, "symbol": "EURUSD", "side": "buy", "quantity": 2.0,
                    "filled_quantity": 1.0, "status": "partially_filled"},
                   {"order_id": "o-x", "symbol": "GBPUSD", "side": "sell", "quantity": 0.5, "filled_quantity": 0.0, "status": "accepted"}],
        "fills": [{"fill_id": "f1", "order_id": book.pending["d-1"].client_order_id, "symbol": "EURUSD", "side": "buy",
                   "quantity": 1.0, "price": 1.08, "ts": 4, "commission": 0.0}],
    }  # fmt: skip
    problems = book.reconcile(state, 5)
    assert len(problems) == 1 and "BTCUSD" in problems[0]
    assert book.balance() == D("99990.0") and book.filled("EURUSD") == 1
    assert book.net("EURUSD") == 2 and book.net("GBPUSD") == D("-0.5")  # the rest of our order, and an open order we did not know
    oid = book.pending["d-1"].client_order_id
    book.on_order_event(event("partially_filled", 1.0, 1.08, order=oid), r)  # the broker already counted this lot
    assert book.filled("EURUSD") == 1
    book.on_order_event(event("filled", 2.0, 1.085, order=oid), r)  # the second lot at 1.09
    assert book.filled("EURUSD") == 2 and book.positions["EURUSD"].avg_price == D("1.085") and "d-1" not in book.pending


@pytest.mark.parametrize("swap", [1e26, float("inf"), -2.5e40, "n/a", None])
def test_a_fill_whose_swap_cannot_be_booked_is_refused_by_the_one_fill_check_and_never_half_applied(swap: Any) -> None:
    """fill_problem (execution's, performance's and the gate's check) refuses a swap that cannot be booked to the cent;
    the gate's book, handed one anyway, applies nothing of it (no fill id, no commission): a corrected copy still counts."""
    from nodes.trading.fills import fill_problem

    book, r = Book(RULES, "USD", D(100_000)), rates(EURUSD="1.08")
    bad = {**fill_of("o-1", "f1", 1.0, 1.1), "commission": 3.5, "swap": swap}
    assert fill_problem(bad, {"EURUSD"}) is not None  # null too: not the contract's number (all three refuse it alike)
    if swap is not None:
        with pytest.raises((ArithmeticError, ValueError, TypeError)):
            book.on_fill(bad, r)
    assert "f1" not in book.fills and book.balance() == D(100_000)
    assert book.on_fill({**bad, "swap": -1.5}, r) and book.balance() == D("100000") - D("3.50") - D("1.50")
