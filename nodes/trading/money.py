"""Money in the account currency: conversion through the latest prices, and booking to the cent.

A P&L is made in the instrument's quote currency (EURJPY: yen) and converted to the account
currency with the latest mid price of a pair joining the two (USDJPY), directly, inverted, or
through USD. Without such a price the conversion fails loudly: guessing 1.0 would be wrong by
two orders of magnitude for yen.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from framework.errors import FxflowError
from nodes.trading.instruments import dec

CENT = Decimal("0.01")
ONE = Decimal(1)


class MissingRate(FxflowError, LookupError):
    """No price joins two currencies yet."""


def book(amount: Decimal, quantum: Decimal = CENT) -> Decimal:
    """``amount`` as booked on an account: to the cent, half to even."""
    return amount.quantize(quantum, rounding=ROUND_HALF_EVEN)


class Rates:
    """The latest mid price of each pair, as conversion rates between currencies."""

    def __init__(self, pairs: Iterable[tuple[str, str, str]] = ()) -> None:
        self._pairs: dict[tuple[str, str], str] = {}
        self._mid: dict[str, Decimal] = {}
        for symbol, base, quote in pairs:
            self.add_pair(symbol, base, quote)

    def add_pair(self, symbol: str, base: str, quote: str) -> None:
        self._pairs[(base, quote)] = symbol

    def update(self, symbol: str, bid: Any, ask: Any | None = None) -> None:
        mid = dec(bid) if ask is None else (dec(bid) + dec(ask)) / 2
        self._mid[symbol] = mid

    def mid(self, symbol: str) -> Decimal | None:
        return self._mid.get(symbol)

    def rate(self, source: str, target: str) -> Decimal:
        """How many ``target`` one ``source`` is worth."""
        if source == target:
            return ONE
        direct = self._direct(source, target)
        if direct is not None:
            return direct
        for via in ("USD", "EUR"):
            if via in (source, target):
                continue
            first, second = self._direct(source, via), self._direct(via, target)
            if first is not None and second is not None:
                return first * second
        raise MissingRate(f"no price yet to convert {source} to {target}")

    def _direct(self, source: str, target: str) -> Decimal | None:
        symbol = self._pairs.get((source, target))
        if symbol is not None and symbol in self._mid:
            return self._mid[symbol]
        symbol = self._pairs.get((target, source))
        if symbol is not None and symbol in self._mid and self._mid[symbol]:
            return 1 / self._mid[symbol]
        return None

    def convert(self, amount: Decimal, source: str, target: str) -> Decimal:
        return amount * self.rate(source, target)
