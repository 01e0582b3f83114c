"""Exposure in the account currency: notional per symbol, net exposure per currency, gross leverage.

A position of ``q`` lots (signed) in BASE/QUOTE holds ``q × units`` of BASE and owes
``q × units × price`` of QUOTE. Per currency these add up across symbols: long EURUSD and long
EURJPY is twice the EUR, and a short USDJPY adds to a short USD from a long EURUSD. Gold is a
currency here too (XAU). Every amount is converted at the latest mid prices (``Rates``).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from nodes.trading.instruments import Rules
from nodes.trading.money import MissingRate, Rates

ZERO = Decimal(0)


def mid(rates: Rates, symbol: str) -> Decimal:
    price = rates.mid(symbol)
    if price is None:
        raise MissingRate(f"no price yet for {symbol}")
    return price


def notional(lots: Decimal, rules: Rules, rates: Rates, account: str) -> Decimal:
    """The size of a position in the account currency (its base amount, converted), unsigned."""
    return abs(rates.convert(lots * rules.lot_units, rules.base, account))


def currency_exposure(positions: Mapping[str, Decimal], rules: Mapping[str, Rules], rates: Rates, account: str) -> dict[str, Decimal]:
    """Net exposure per currency, in the account currency (> 0 long the currency), over signed lots per symbol."""
    out: dict[str, Decimal] = {}
    for symbol, lots in positions.items():
        if not lots:
            continue
        r = rules[symbol]
        units = lots * r.lot_units
        out[r.base] = out.get(r.base, ZERO) + rates.convert(units, r.base, account)
        out[r.quote] = out.get(r.quote, ZERO) - rates.convert(units * mid(rates, symbol), r.quote, account)
    return out


def gross_notional(positions: Mapping[str, Decimal], rules: Mapping[str, Rules], rates: Rates, account: str) -> Decimal:
    return sum((notional(lots, rules[s], rates, account) for s, lots in positions.items() if lots), ZERO)


def open_count(positions: Mapping[str, Decimal]) -> int:
    return sum(1 for lots in positions.values() if lots)
