"""The money core: instrument rules, currency conversion, the order state machine, netting positions."""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import pytest

from framework.topology.model import Instrument
from nodes.trading.instruments import Rules, VolumeError, dec
from nodes.trading.money import MissingRate, Rates, book
from nodes.trading.orders import InvalidTransition, Order, OrderStatus, TRANSITIONS, client_order_id
from nodes.trading.positions import Position

EURUSD = Rules.of("EURUSD", Instrument(pip=0.0001, digits=5))
USDJPY = Rules.of("USDJPY", Instrument(pip=0.01, digits=3))
XAUUSD = Rules.of("XAUUSD", Instrument(kind="metal", pip=0.01, digits=2))


def test_rules_from_the_instrument() -> None:
    assert (EURUSD.base, EURUSD.quote, EURUSD.lot_units, EURUSD.tick) == ("EUR", "USD", 100_000, Decimal("0.00001"))
    assert (XAUUSD.base, XAUUSD.quote, XAUUSD.lot_units) == ("XAU", "USD", 100)
    assert USDJPY.price(151.23456) == Decimal("151.235") and EURUSD.price(1.085255) == Decimal("1.08526")
    assert EURUSD.price(0.1 + 0.2) == Decimal("0.30000")  # the float's written value, not 0.300000000000000044…


def test_volumes_round_down_to_the_step_and_respect_the_bounds() -> None:
    assert EURUSD.lots(0.129) == Decimal("0.12") and EURUSD.lots("1") == Decimal("1")
    for bad in (0.009, 0, -1, 101, float("nan")):
        with pytest.raises(VolumeError):
            EURUSD.lots(bad)


def test_conversion_direct_inverse_and_through_usd() -> None:
    rates = Rates([("EURUSD", "EUR", "USD"), ("USDJPY", "USD", "JPY"), ("EURJPY", "EUR", "JPY")])
    with pytest.raises(MissingRate):
        rates.rate("JPY", "USD")
    rates.update("USDJPY", 150, 150.02)
    rates.update("EURUSD", "1.08")
    assert rates.rate("JPY", "USD") == 1 / Decimal("150.01")
    assert rates.rate("EUR", "JPY") == Decimal("1.08") * Decimal("150.01")  # no EURJPY price yet: through USD
    rates.update("EURJPY", "162.5")
    assert rates.rate("EUR", "JPY") == Decimal("162.5")
    assert rates.convert(Decimal(1000), "USD", "USD") == 1000


def test_legal_and_illegal_transitions() -> None:
    order = Order("o1", "EURUSD", "buy", Decimal("1"))
    with pytest.raises(InvalidTransition):
        order.move(OrderStatus.FILLED)  # never sent
    order.move(OrderStatus.SUBMITTED)
    assert order.fill("f1", Decimal("0.4"), Decimal("1.1")) and order.status is OrderStatus.PARTIALLY_FILLED
    assert not order.fill("f1", Decimal("0.4"), Decimal("1.1"))  # the same fill again: applied once
    assert order.fill("f2", Decimal("0.6"), Decimal("1.2")) and order.status is OrderStatus.FILLED
    assert order.avg_price == Decimal("1.16") and order.done
    for status in OrderStatus:
        with pytest.raises(InvalidTransition):
            order.move(status)  # nothing leaves a terminal status
    with pytest.raises(InvalidTransition):
        Order("o2", "EURUSD", "buy", Decimal("1"), status=OrderStatus.SUBMITTED).fill("f", Decimal("2"), Decimal(1))
    assert set(TRANSITIONS) == {OrderStatus.PENDING, OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED}


def test_a_signal_gives_one_client_order_id() -> None:
    assert client_order_id("sig-1") == client_order_id("sig-1") != client_order_id("sig-2")
    assert client_order_id("sig-1", 1) != client_order_id("sig-1")


def test_netting_open_add_reduce_flip() -> None:
    pos = Position(EURUSD)
    assert pos.apply("buy", Decimal("1"), Decimal("1.10000")) == 0
    assert pos.apply("buy", Decimal("1"), Decimal("1.10100")) == 0 and pos.avg_price == Decimal("1.10050")
    assert pos.apply("sell", Decimal("0.5"), Decimal("1.10150")) == Decimal("50.00000")  # 0.001 × 50,000
    assert pos.unrealized(Decimal("1.10050"), Decimal("1.10060")) == 0
    assert pos.apply("sell", Decimal("2.5"), Decimal("1.10000")) == Decimal("-75.00000")  # closes 1.5, opens 1 short
    assert (pos.quantity, pos.avg_price) == (Decimal("-1"), Decimal("1.10000"))
    assert pos.unrealized(Decimal("1.09990"), Decimal("1.09995")) == Decimal("5.00000")  # a short marked at the ask
    assert pos.apply("buy", Decimal("1"), Decimal("1.1")) == 0 and pos.flat


def test_a_long_run_of_random_trades_books_the_exact_balance() -> None:
    """Against exact rational arithmetic: 20,000 fills of random size and price, P&L in yen
    converted to USD at each fill and booked to the cent, with no drift from floats."""
    rng = random.Random(7)
    pos = Position(USDJPY)
    balance = Decimal("100000.00")
    ref_qty, ref_avg, ref_balance = Fraction(0), Fraction(0), Fraction(100_000)
    for _ in range(20_000):
        side = rng.choice(("buy", "sell"))
        lots = USDJPY.lots(rng.uniform(0.01, 3))
        price = USDJPY.price(150 + rng.uniform(-5, 5))
        realized = pos.apply(side, lots, price)
        balance += book(realized / price)  # yen → USD at the fill's USDJPY price
        signed = Fraction(lots) * (1 if side == "buy" else -1)
        p = Fraction(price)
        if ref_qty == 0 or (ref_qty > 0) == (signed > 0):
            ref_avg = (ref_avg * abs(ref_qty) + p * abs(signed)) / abs(ref_qty + signed)
            ref_qty += signed
            ref_realized = Fraction(0)
        else:
            closed = min(abs(ref_qty), abs(signed))
            ref_realized = (p - ref_avg) * closed * 100_000 * (1 if ref_qty > 0 else -1)
            ref_qty += signed
            ref_avg = Fraction(0) if ref_qty == 0 else (p if (ref_qty > 0) != (ref_qty - signed > 0) else ref_avg)
        ref_balance += Fraction(book(dec(ref_realized.numerator) / dec(ref_realized.denominator) / price))
    assert pos.quantity == ref_qty
    assert balance == Decimal(ref_balance.numerator) / Decimal(ref_balance.denominator)
    assert abs(Fraction(pos.avg_price) - ref_avg) < Fraction(1, 10**20)
