"""Netting positions and their P&L in the account currency (execution-service and performance-monitoring).

A fill moves the symbol's :class:`~nodes.trading.positions.Position`; what it realizes (in the
quote currency) is booked as the broker booked it, when the fill says (``fill.v1`` ``profit``), or
converted to the account currency with the prices of its time
(:class:`~nodes.trading.money.Rates`: the latest, or, for a fill dated before the latest dated
quotes, each pair's quote as of the fill; a fill ahead of its symbol's dated quotes waits for
the quote of its time) and booked to the cent at that moment. When no price
joins the quote currency to the account's yet (EURJPY before any USDJPY quote), the amount is
kept in the quote currency and booked at the first price that arrives: it is never converted
at a guessed rate. Unrealized P&L is marked at the price that would close the position (bid
for a long, ask for a short) and converted the same way.

The margin a position uses is its units × mid price / the account's leverage, converted the same way.

**Swap** is what the broker says it is: a fill carries the swap it realized (``fill.v1`` ``swap``,
in the account currency, signed as MT5's deal swap), booked to the balance with that fill. The
swap a broker accrues on an open position at each daily roll is not in any fill until (a share
of) the position closes, so it is in neither the balance nor the unrealized P&L here: the
broker's equity counts it (MT5's and the paper broker's), this one does not. Balances agree to
the cent at every fill; equity differs by the open positions' accrued swap (``broker_state.v1``
``positions[].swap``) and agrees again once they close.

Quotes are kept as they arrive (floats) and turned into rates only when a conversion needs
them, so a tick costs a dict store.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from nodes.trading.instruments import Rules, dec
from nodes.trading.money import MissingRate, Rates, book
from nodes.trading.positions import Position

ZERO = Decimal(0)


def _ts(quote: tuple[int, float, float]) -> int:
    return quote[0]


@dataclass(frozen=True, slots=True)
class Applied:
    realized: Decimal
    """What the fill realized, in the quote currency (zero for a fill that only opens or adds)."""
    booked: Decimal | None
    """Booked now in the account currency: this fill's P&L and whatever of the symbol waited for a price
    (None: it waits too)."""


@dataclass
class Entry:
    position: Position
    realized: Decimal = ZERO
    """Booked, in the account currency."""
    unbooked: Decimal = ZERO
    """Realized in the quote currency, waiting for a price to convert it."""
    unbooked_ts: int | None = None
    """The time of a fill whose conversion waits for the prices of its time (see :meth:`Ledger.fill`)."""
    commission: Decimal = ZERO
    swap: Decimal = ZERO
    """Realized with the fills, in the account currency (< 0: charged)."""
    unrealized: Decimal = ZERO
    """At the last mark, in the account currency."""
    fills: int = 0

    @property
    def net(self) -> Decimal:
        """What the symbol's fills moved the balance by: booked P&L and swap less commission."""
        return self.realized + self.swap - self.commission


@dataclass
class Ledger:
    rules: Mapping[str, Rules]
    currency: str
    rates: Rates = field(init=False)
    entries: dict[str, Entry] = field(default_factory=dict)
    quotes: dict[str, tuple[float, float]] = field(default_factory=dict)
    history_ms: int = 600_000
    """How long dated quotes are kept to convert a fill dated before the latest prices (a late fill)."""
    _stale: set[str] = field(default_factory=set)
    _history: dict[str, deque[tuple[int, float, float]]] = field(default_factory=dict)
    _exact: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    """symbol → its latest quote as Decimals, made once per quote (by :meth:`_sync`) for the rates and the marks."""

    def __post_init__(self) -> None:
        self.rates = Rates((s, r.base, r.quote) for s, r in self.rules.items())

    def quote(self, symbol: str, bid: float, ask: float, ts: int | None = None) -> None:
        """The latest price of ``symbol``; with its time ``ts``, also kept for :meth:`fill`'s conversions as of a fill's time."""
        self.quotes[symbol] = (bid, ask)
        self._stale.add(symbol)
        if ts is not None:
            kept = self._history.get(symbol)
            if kept is None:
                kept = self._history[symbol] = deque()
            if kept and ts < kept[-1][0]:
                return
            kept.append((ts, bid, ask))
            while len(kept) > 1 and kept[1][0] <= ts - self.history_ms:
                kept.popleft()

    def _sync(self) -> None:
        if not self._stale:
            return
        for symbol in self._stale:
            bid, ask = self.quotes[symbol]
            exact_bid = dec(bid)
            exact = self._exact[symbol] = (exact_bid, exact_bid if ask is bid else dec(ask))
            self.rates.update(symbol, *exact)
        self._stale.clear()

    def entry(self, symbol: str) -> Entry:
        entry = self.entries.get(symbol)
        if entry is None:
            entry = self.entries[symbol] = Entry(Position(self.rules[symbol]))
        return entry

    def apply(self, symbol: str, side: str, lots: Decimal, price: Decimal, commission: Decimal,
              swap: Decimal = ZERO, profit: Decimal | None = None) -> Decimal | None:  # fmt: skip
        """Apply a fill; the P&L it realized in the account currency, booked (None: no price to convert it yet).
        ``swap`` (account currency, booked) is what the fill realized of the swap the broker accrued; ``profit``
        (account currency, booked) what the broker booked as its P&L, taken as it is (see :meth:`fill`).

        A symbol with no quote takes the fill's price as its rate (a USDJPY fill is a USDJPY price)."""
        return self.fill(symbol, side, lots, price, commission, swap=swap, profit=profit).booked

    def fill(self, symbol: str, side: str, lots: Decimal, price: Decimal, commission: Decimal, ts: int | None = None,
             swap: Decimal = ZERO, profit: Decimal | None = None) -> Applied:  # fmt: skip
        """:meth:`apply`, also telling what the fill itself realized in the quote currency (a round trip's share).

        With the broker's ``profit`` (``fill.v1`` ``profit``) the fill books that: the broker converted at the rate of
        the deal's instant, which a book fed bars or conflated ticks may not have seen (a USDJPY deal at the next bar's
        open, in a USD account), and the balance is then the broker's to the cent. Not while an earlier fill of the
        symbol waits for a price: amounts are booked in the order they were realized. Without it, with the fill's time
        ``ts``, a fill dated before the latest dated quotes is converted at the prices of its
        time (each pair's last quote at or before ``ts``), as the broker booked it, not at later ones; a fill newer
        than its own symbol's latest dated quote (the broker filled on a price not given here yet) waits for that
        price: booked by :meth:`book_waiting` once a quote of its symbol at or after ``ts`` has come."""
        self._sync()
        if symbol not in self.quotes:
            self.rates.update(symbol, price)
        entry = self.entry(symbol)
        entry.fills += 1
        entry.commission += commission
        entry.swap += swap
        realized = entry.position.apply(side, lots, price)
        if profit is not None and not entry.unbooked:
            entry.realized += profit
            return Applied(realized, profit)
        if not realized:
            return Applied(ZERO, ZERO)
        entry.unbooked += realized
        if ts is not None and self._ahead(symbol, ts):
            entry.unbooked_ts = ts if entry.unbooked_ts is None else min(entry.unbooked_ts, ts)
            return Applied(realized, None)
        return Applied(realized, self._book(symbol, entry, None if ts is None else self._rates_at(ts, symbol, price)))

    def _ahead(self, symbol: str, ts: int) -> bool:
        """Whether ``ts`` is later than every dated quote of ``symbol`` while its P&L needs a conversion."""
        kept = self._history.get(symbol)
        return bool(kept) and kept[-1][0] < ts and self.rules[symbol].quote != self.currency

    def _rates_at(self, ts: int, symbol: str, price: Decimal | None = None) -> Rates | None:
        """The rates as of ``ts`` (None: the latest are, no dated quote being later)."""
        if not any(kept[-1][0] > ts for kept in self._history.values()):
            return None
        rates = Rates((s, r.base, r.quote) for s, r in self.rules.items())
        for other, (bid, ask) in self.quotes.items():
            kept = self._history.get(other)
            if kept:
                at = bisect.bisect_right(kept, ts, key=_ts)
                _, bid, ask = kept[at - 1] if at else kept[0]  # none as old: the oldest kept is the nearest
            rates.update(other, bid, ask)
        if symbol not in self.quotes and price is not None:
            rates.update(symbol, price)
        return rates

    def _book(self, symbol: str, entry: Entry, rates: Rates | None = None) -> Decimal | None:
        quote = self.rules[symbol].quote
        try:
            booked = book((rates or self.rates).convert(entry.unbooked, quote, self.currency))
        except MissingRate:
            return None
        entry.realized += booked
        entry.unbooked = ZERO
        entry.unbooked_ts = None
        return booked

    def book_waiting(self) -> list[str]:
        """Book what waited for a price, where one has arrived; the symbols booked."""
        waiting = [s for s, e in self.entries.items() if e.unbooked]
        if not waiting:
            return []
        self._sync()
        booked = []
        for symbol in waiting:
            at = self.entries[symbol].unbooked_ts
            if at is not None and self._ahead(symbol, at):
                continue
            if self._book(symbol, self.entries[symbol], None if at is None else self._rates_at(at, symbol)) is not None:
                booked.append(symbol)
        return booked

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
        pnl = entry.position.unrealized(*self._exact[symbol])
        try:
            entry.unrealized = book(self.rates.convert(pnl, rules.quote, self.currency))
        except MissingRate:
            return False
        return True

    def margin(self, symbol: str, leverage: Decimal) -> Decimal | None:
        """The margin the symbol's position uses, in the account currency, booked: units × mid price / leverage,
        converted from the quote currency (None: no price or no rate yet)."""
        entry = self.entries.get(symbol)
        if entry is None or entry.position.flat:
            return ZERO
        self._sync()
        mid = self.rates.mid(symbol)
        if mid is None:
            return None
        rules = self.rules[symbol]
        try:
            return book(self.rates.convert(rules.units(abs(entry.position.quantity)) * mid / leverage, rules.quote, self.currency))
        except MissingRate:
            return None

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
            "swap": float(entry.swap),
            "currency": self.currency,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            s: {
                "quantity": str(e.position.quantity),
                "avg_price": str(e.position.avg_price),
                "realized": str(e.realized),
                "unbooked": str(e.unbooked),
                "unbooked_ts": e.unbooked_ts,
                "commission": str(e.commission),
                "swap": str(e.swap),
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
            entry.unbooked_ts = d.get("unbooked_ts")
            entry.commission = Decimal(d["commission"])
            entry.swap = Decimal(d.get("swap", "0"))
            entry.unrealized = Decimal(d["unrealized"])
            entry.fills = d["fills"]
