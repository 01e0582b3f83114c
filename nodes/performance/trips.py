"""Round trips of a netting account: from flat to flat, per symbol, with their P&L in the account currency.

A trip opens with the fill that leaves a symbol flat, grows with fills on its side, shrinks with
fills against it, and closes with the fill that brings the position back to zero. A fill that
crosses zero closes the trip and opens the next one with the rest, its commission (and slippage)
shared between the two by lots. A trip's P&L is what its closing fills realized, as the
:class:`~nodes.trading.ledger.Ledger` booked it, plus the swap they realized (``fill.v1`` ``swap``:
what the broker accrued on the position at its rolls), less the commission of all its fills: the
trips' P&L adds up to the ledger's realized P&L and swap less commission, to the cent.

What a fill realizes in a quote currency that cannot be converted yet (EURJPY before any USDJPY
price) waits in its trip; the amount the ledger books later is shared among the symbol's waiting
trips (in proportion, the last taking the rounding), and a closed trip is *finished* (reported)
only once nothing of it waits.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from nodes.trading.fills import fill_swap
from nodes.trading.instruments import Rules
from nodes.trading.money import book

ZERO = Decimal(0)


@dataclass
class Trip:
    trip_id: str
    """The id of the fill that opened it."""
    symbol: str
    side: str
    """The opening side: buy (a long trip) or sell (a short one)."""
    order_id: str
    """The order of the opening fill."""
    open_ts: int
    opened: Decimal = ZERO
    """Lots opened (on the trip's side)."""
    open_value: Decimal = ZERO
    """Σ lots × price of the opening fills."""
    closed: Decimal = ZERO
    close_value: Decimal = ZERO
    close_ts: int | None = None
    close_order_id: str | None = None
    realized: Decimal = ZERO
    """Booked, in the account currency."""
    waiting: Decimal = ZERO
    """Realized in the quote currency, not booked yet."""
    commission: Decimal = ZERO
    swap: Decimal = ZERO
    """Realized by its fills, in the account currency (< 0: charged)."""
    slippage_lots: Decimal = ZERO
    """Σ adverse slippage in pips × lots, over the fills that report a slippage."""
    slipped_lots: Decimal = ZERO

    @property
    def done(self) -> bool:
        return self.close_ts is not None and self.waiting == 0

    @property
    def pnl(self) -> Decimal:
        return self.realized + self.swap - self.commission

    def row(self) -> dict[str, Any]:
        """The trade_analysis row (and the report's trade), floats at the boundary."""
        assert self.close_ts is not None
        return {
            "trade_id": self.trip_id,
            "order_id": self.order_id,
            "close_order_id": self.close_order_id or "",
            "symbol": self.symbol,
            "side": self.side,
            "open_ts": self.open_ts,
            "ts": self.close_ts,
            "volume": float(self.opened),
            "entry_price": float(self.open_value / self.opened),
            "exit_price": float(self.close_value / self.closed),
            "pnl": float(self.pnl),
            "commission": float(self.commission),
            "swap": float(self.swap),
            "slippage": float(self.slippage_lots / self.slipped_lots) if self.slipped_lots else 0.0,
            "holding_s": (self.close_ts - self.open_ts) / 1000,
        }

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Decimal) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Trip:
        decimals = {k for k, f in cls.__dataclass_fields__.items() if f.default is ZERO}
        return cls(**{k: Decimal(v) if k in decimals else v for k, v in d.items()})


@dataclass
class Trips:
    rules: Mapping[str, Rules]
    open: dict[str, Trip] = field(default_factory=dict)
    """symbol → its open trip."""
    pending: list[Trip] = field(default_factory=list)
    """Closed trips not handed out by :meth:`finished` yet (their P&L may wait for a price), in closing order."""

    def on_fill(self, fill: Mapping[str, Any], held: Decimal, avg: Decimal, lots: Decimal, price: Decimal,
                commission: Decimal, realized: Decimal) -> Trip | None:  # fmt: skip
        """Count a fill, applied to a position of ``held`` lots (signed, before it) at ``avg``, that realized
        ``realized`` in the quote currency; the trip it closed, if any (:meth:`finished` hands it out once booked)."""
        symbol, side = fill["symbol"], fill["side"]
        slip = self._slippage(fill)
        swap = fill_swap(fill)
        trip = self.open.get(symbol)
        if held == 0 or trip is None:
            if held != 0:  # a position from before anything here was recorded: a trip from its average
                trip = self.open[symbol] = Trip(f"{fill['fill_id']}-held", symbol, "buy" if held > 0 else "sell", "", fill["ts"],
                                                abs(held), abs(held) * avg)  # fmt: skip
            else:
                self._open(fill, lots, price, commission, slip).swap += swap
                return None
        assert trip is not None
        trip.swap += swap  # what the broker realized of the position's swap: the trip that held it
        if (held > 0) == (side == "buy"):
            self._add(trip, lots, price, commission, slip, lots)
            return None
        closing = min(abs(held), lots)
        rest = lots - closing
        own = commission if not rest else book(commission * closing / lots)
        trip.closed += closing
        trip.close_value += closing * price
        trip.commission += own
        trip.waiting += realized
        self._slip(trip, slip, closing)
        if closing < abs(held):
            return None
        trip.close_ts = fill["ts"]
        trip.close_order_id = fill["order_id"]
        del self.open[symbol]
        self.pending.append(trip)
        if rest:
            self._open(fill, rest, price, commission - own, slip)
        return trip

    def book(self, symbol: str, amount: Decimal) -> None:
        """Share ``amount`` (booked now in the account currency) among the symbol's waiting trips."""
        waiting = [t for t in self.pending if t.symbol == symbol and t.waiting]
        trip = self.open.get(symbol)
        if trip is not None and trip.waiting:
            waiting.append(trip)
        if not waiting:
            return
        total = sum((t.waiting for t in waiting), ZERO)
        left = amount
        for t in waiting[:-1]:
            share = book(amount * t.waiting / total) if total else ZERO
            t.realized += share
            left -= share
            t.waiting = ZERO
        waiting[-1].realized += left
        waiting[-1].waiting = ZERO

    def finished(self) -> list[Trip]:
        """The closed trips whose P&L is booked, taken out, in closing order (a trip waiting for a price holds back
        none of the others)."""
        done = [t for t in self.pending if t.done]
        if done:
            self.pending = [t for t in self.pending if not t.done]
        return done

    def trips(self) -> Iterator[Trip]:
        yield from self.open.values()
        yield from self.pending

    def _open(self, fill: Mapping[str, Any], lots: Decimal, price: Decimal, commission: Decimal, slip: Decimal | None) -> Trip:
        trip = self.open[fill["symbol"]] = Trip(fill["fill_id"], fill["symbol"], fill["side"], fill["order_id"], fill["ts"])
        self._add(trip, lots, price, commission, slip, lots)
        return trip

    def _add(self, trip: Trip, lots: Decimal, price: Decimal, commission: Decimal, slip: Decimal | None, slipped: Decimal) -> None:
        trip.opened += lots
        trip.open_value += lots * price
        trip.commission += commission
        self._slip(trip, slip, slipped)

    @staticmethod
    def _slip(trip: Trip, slip: Decimal | None, lots: Decimal) -> None:
        if slip is not None:
            trip.slippage_lots += slip * lots
            trip.slipped_lots += lots

    def _slippage(self, fill: Mapping[str, Any]) -> Decimal | None:
        """The fill's adverse slippage in pips (> 0: paid), from fill.v1's signed price difference."""
        value = fill.get("slippage")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            return None
        pips = self.rules[fill["symbol"]].pips(value)
        return pips if fill["side"] == "buy" else -pips

    def to_json(self) -> dict[str, Any]:
        return {"open": [t.to_json() for t in self.open.values()], "pending": [t.to_json() for t in self.pending]}

    def load(self, state: Mapping[str, Any]) -> None:
        self.open = {t.symbol: t for t in map(Trip.from_json, state["open"])}
        self.pending = [Trip.from_json(d) for d in state["pending"]]
