"""Netting positions and their P&L in the account currency.

A fill moves the symbol's :class:`~nodes.trading.positions.Position`; what it realizes (in the
quote currency) is converted to the account currency with the latest prices
(:class:`~nodes.trading.money.Rates`) and booked to the cent at that moment. When no price
joins the quote currency to the account's yet (EURJPY before any USDJPY quote), the amount is
kept in the quote currency and booked at the first price that arrives: it is never converted
at a guessed rate. Unrealized P&L is marked at the price that would close the position (bid
for a long, ask for a short) and converted the same way.

Quotes are kept as they arrive (floats) and turned into rates only when a conversion needs
them, so a tick costs a dict store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from nodes.trading.instruments import Rules, dec
from nodes.trading.money import MissingRate, Rates, book
from nodes.trading.positions import Position

ZERO = Decimal(0)


@dataclass
class Entry:
    position: Position
    realized: Decimal = ZERO
    """Booked, in the account currency."""
    unbooked: Decimal = ZERO
    """Realized in the quote currency, waiting for a price to convert it."""
    commission: Decimal = ZERO
    unrealized: Decimal = ZERO
    """At the last mark, in the account currency."""
    fills: int = 0


@dataclass
class Ledger:
    rules: Mapping[str, Rules]
    currency: str
    rates: Rates = field(init=False)
    entries: dict[str, Entry] = field(default_factory=dict)
    quotes: dict[str, tuple[float, float]] = field(default_factory=dict)
    _stale: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rates = Rates((s, r.base, r.quote) for s, r in self.rules.items())

    def quote(self, symbol: str, bid: float, ask: float) -> None:
        self.quotes[symbol] = (bid, ask)
        self._stale.add(symbol)

    def _sync(self) -> None:
        for symbol in self._stale:
            bid, ask = self.quotes[symbol]
            self.rates.update(symbol, bid, ask)
        self._stale.clear()

    def entry(self, symbol: str) -> Entry:
        entry = self.entries.get(symbol)
        if entry is None:
            entry = self.entries[symbol] = Entry(Position(self.rules[symbol]))
        return entry

    def apply(self, symbol: str, side: str, lots: Decimal, price: Decimal, commission: Decimal) -> Decimal | None:
        """Apply a fill; the P&L it realized in the account currency, booked (None: no price to convert it yet).

        A symbol with no quote takes the fill's price as its rate (a USDJPY fill is a USDJPY price)."""
        self._sync()
        if symbol not in self.quotes:
            self.rates.update(symbol, price)
        entry = self.entry(symbol)
        entry.fills += 1
        entry.commission += commission
        realized = entry.position.apply(side, lots, price)
        if not realized:
            return ZERO
        entry.unbooked += realized
        return self._book(symbol, entry)

    def _book(self, symbol: str, entry: Entry) -> Decimal | None:
        quote = self.rules[symbol].quote
        try:
            booked = book(self.rates.convert(entry.unbooked, quote, self.currency))
        except MissingRate:
            return None
        entry.realized += booked
        entry.unbooked = ZERO
        return booked

    def book_waiting(self) -> list[str]:
        """Book what waited for a price, where one has arrived; the symbols booked."""
        waiting = [s for s, e in self.entries.items() if e.unbooked]
        if not waiting:
            return []
        self._sync()
        return [s for s in waiting if self._book(s, self.entries[s]) is not None]

    def mark(self, symbol: str) -> bool:
        """Mark the position to its latest quote; False when there is no quote or no rate yet."""
        entry = self.entries.get(symbol)
        quote = self.quotes.get(symbol)
        if entry is None or quote is None:
            return False
        if entry.position.flat:
            entry.unrealized = ZERO
            return True
        self._sync()
        rules = self.rules[symbol]
        pnl = entry.position.unrealized(dec(quote[0]), dec(quote[1]))
        try:
            entry.unrealized = book(self.rates.convert(pnl, rules.quote, self.currency))
        except MissingRate:
            return False
        return True

    def net(self) -> dict[str, Decimal]:
        """Signed lots per symbol, flat ones left out."""
        return {s: e.position.quantity for s, e in self.entries.items() if not e.position.flat}

    def row(self, symbol: str, ts: int) -> dict[str, Any]:
        entry = self.entry(symbol)
        pos = entry.position
        return {
            "symbol": symbol,
            "ts": ts,
            "quantity": float(pos.quantity),
            "avg_price": float(pos.avg_price),
            "realized_pnl": float(entry.realized),
            "unrealized_pnl": float(entry.unrealized),
            "commission": float(entry.commission),
            "currency": self.currency,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            s: {
                "quantity": str(e.position.quantity),
                "avg_price": str(e.position.avg_price),
                "realized": str(e.realized),
                "unbooked": str(e.unbooked),
                "commission": str(e.commission),
                "unrealized": str(e.unrealized),
                "fills": e.fills,
            }
            for s, e in self.entries.items()
        }

    def load(self, state: Mapping[str, Any]) -> None:
        for symbol, d in state.items():
            if symbol not in self.rules:
                continue
            entry = self.entry(symbol)
            entry.position.quantity = Decimal(d["quantity"])
            entry.position.avg_price = Decimal(d["avg_price"])
            entry.realized = Decimal(d["realized"])
            entry.unbooked = Decimal(d["unbooked"])
            entry.commission = Decimal(d["commission"])
            entry.unrealized = Decimal(d["unrealized"])
            entry.fills = d["fills"]
