"""The gate's own view of the account, from order and fill events as they happen (never a table that lags).

- Positions (netting, ``nodes.trading.positions.Position``) move with what the broker filled.
  Two streams say it: ``fill.v1`` (each fill once, by fill id; also the fills no order of ours
  caused: a stop loss, a take profit, a stop-out) and ``order_event.v1`` (an order's cumulative
  ``filled_quantity`` and ``avg_price``). Per order the positions hold the larger of the two
  counts, so each lot is counted once whichever arrives first, and a fill the broker's state
  already counted at reconciliation is not counted again. (The fill normally comes first: the
  execution service publishes the order event after it has the fill.)
- Pending approvals count until their order is done: an approval is pending from the moment
  the gate publishes it; what its order has filled no longer counts as pending; a terminal
  status (filled, cancelled, rejected, failed, expired) ends it, and so does silence: one with
  no order event or fill for ``pending_timeout`` (it never became an order, or its order is
  stuck) stops counting (:meth:`Book.expire`), so it cannot block new positions forever.
- The balance moves with realized P&L (converted to the account currency when realized, booked
  to the cent) and with commissions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from nodes.trading.fills import fill_swap
from nodes.trading.instruments import Rules, dec
from nodes.trading.money import MissingRate, Rates, book
from nodes.trading.orders import TERMINAL, OrderStatus, client_order_id
from nodes.trading.positions import Position

ZERO = Decimal(0)
TERMINAL_STATUSES = frozenset(s.value for s in TERMINAL)
STATUSES = frozenset(s.value for s in OrderStatus)


@dataclass(slots=True)
class Quote:
    bid: Decimal
    ask: Decimal | None
    """None: a price from a bar without spreads."""
    ts: int
    source: str


@dataclass(slots=True)
class Pending:
    """An approval whose order has not finished."""

    key: str
    """The decision id, or ``order:<id>`` for an open order found at reconciliation."""
    symbol: str
    side: str
    quantity: Decimal
    ts: int
    """When it was approved, or last heard of (an order event or a fill of its order), in event time."""
    signal_id: str | None = None
    order_id: str | None = None
    filled: Decimal = ZERO
    seen: bool = False
    """An order event for it has arrived."""

    @property
    def signed_remaining(self) -> Decimal:
        left = max(self.quantity - self.filled, ZERO)
        return left if self.side == "buy" else -left

    @property
    def client_order_id(self) -> str | None:
        return self.order_id or (client_order_id(self.signal_id) if self.signal_id else None)


@dataclass(slots=True)
class Counted:
    """How much of an order the positions already hold."""

    filled: Decimal
    notional: Decimal | None
    """Σ quantity × price counted; None when the filled part came from the broker without prices."""
    ts: int
    done: bool = False
    fill_qty: Decimal = ZERO
    """Σ quantity of the fill.v1 messages of this order seen."""
    fill_notional: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class Applied:
    symbol: str
    filled: Decimal
    """Lots this event added to the position."""
    realized: Decimal
    """Realized P&L in the account currency (booked), 0 when not converted yet."""
    done: bool


class Book:
    def __init__(self, rules: Mapping[str, Rules], account: str, balance: Decimal) -> None:
        self.rules = rules
        self.account = account
        self.positions: dict[str, Position] = {}
        self.cash: dict[str, Decimal] = {account: balance}
        """The balance in the account currency, plus realized P&L not converted yet (no price then), per currency."""
        self.pending: dict[str, Pending] = {}
        self.orders: dict[str, Counted] = {}
        self.fills: dict[str, int] = {}
        """fill_id → ts of the fills whose commission was booked."""

    # ------------------------------------------------------------------ reading

    def filled(self, symbol: str) -> Decimal:
        pos = self.positions.get(symbol)
        return pos.quantity if pos is not None else ZERO

    def net(self, symbol: str) -> Decimal:
        """Filled position plus what pending approvals still add (signed lots)."""
        if not self.pending:
            return self.filled(symbol) + ZERO  # what the sum below gives with nothing pending, to the last digit
        return self.filled(symbol) + sum((p.signed_remaining for p in self.pending.values() if p.symbol == symbol), ZERO)

    def nets(self) -> dict[str, Decimal]:
        out = {s: p.quantity for s, p in self.positions.items() if p.quantity}
        for p in self.pending.values():
            out[p.symbol] = out.get(p.symbol, ZERO) + p.signed_remaining
        return {s: q for s, q in sorted(out.items()) if q}

    def balance(self) -> Decimal:
        return self.cash[self.account]

    def equity(self, quotes: Mapping[str, Quote], rates: Rates) -> Decimal:
        """Balance plus the open positions marked to market, in the account currency.

        Raises ``MissingRate`` when a position has no price, or an amount cannot be converted."""
        total = self.cash[self.account]
        for currency, amount in self.cash.items():
            if currency != self.account and amount:
                total += rates.convert(amount, currency, self.account)
        for symbol, pos in self.positions.items():
            if not pos.quantity:
                continue
            quote = quotes.get(symbol)
            if quote is None:
                raise MissingRate(f"no price yet for {symbol}, where a position is open")
            pnl = pos.unrealized(quote.bid, quote.ask if quote.ask is not None else quote.bid)
            total += rates.convert(pnl, pos.rules.quote, self.account)
        return total

    # ------------------------------------------------------------------ events

    def approve(self, key: str, symbol: str, side: str, quantity: Decimal, ts: int, signal_id: str) -> None:
        self.pending[key] = Pending(key, symbol, side, quantity, ts, signal_id=signal_id)

    def on_order_event(self, event: Mapping[str, Any], rates: Rates, fallback_price: Decimal | None = None) -> Applied:
        """Apply one ``order_event.v1``; the price of newly filled lots follows from the cumulative average.

        An event for an order already done (one delivered late or again: delivery is at least once) still counts
        lots no other message counted, but changes neither its status nor what is pending: its approval ended."""
        symbol, side, status = event["symbol"], event["side"], event["status"]
        key = event["client_order_id"]
        ts = int(event["ts"])
        counted = self._counted(key, ts)
        filled = dec(event.get("filled_quantity") or 0)
        avg = event.get("avg_price")
        notional = dec(avg) * filled if avg is not None else None
        added, realized = self._advance(counted, symbol, side, filled, notional, rates, fallback_price)
        if counted.done:
            return Applied(symbol, added, realized, True)
        done = counted.done = status in TERMINAL_STATUSES
        pending = self.pending.get(event.get("decision_id", "")) or self.pending.get(f"order:{key}")
        if pending is None and not done:
            pending = self.pending[f"order:{key}"] = Pending(
                f"order:{key}", symbol, side, dec(event["quantity"]), ts, signal_id=event.get("signal_id"), order_id=key
            )
        if pending is not None:
            pending.order_id, pending.seen = key, True
            pending.filled = max(pending.filled, counted.filled)
            pending.ts = max(pending.ts, ts)
            if done:
                del self.pending[pending.key]
        return Applied(symbol, added, realized, done)

    def on_fill(self, fill: Mapping[str, Any], rates: Rates) -> Applied | None:
        """Apply one ``fill.v1`` (its lots, its commission); None for a fill id seen before."""
        fill_id = fill["fill_id"]
        if fill_id in self.fills:
            return None
        symbol, side, key = fill["symbol"], fill["side"], fill["order_id"]
        ts = int(fill["ts"])
        qty, price = dec(fill["quantity"]), dec(fill["price"])
        if symbol not in self.rules:
            raise ValueError(f"fill for unknown symbol {symbol!r}")
        if qty <= 0 or price <= 0:
            raise ValueError(f"fill {fill_id} of {qty} lots at {price}")
        commission, swap = book(dec(fill.get("commission") or 0)), fill_swap(fill)  # before anything is applied
        self.fills[fill_id] = ts
        self.cash[self.account] += swap - commission
        counted = self._counted(key, ts)
        counted.fill_qty += qty
        counted.fill_notional += qty * price
        added, realized = self._advance(counted, symbol, side, counted.fill_qty, counted.fill_notional, rates, price)
        for pending in self.pending.values():
            if pending.client_order_id == key:
                pending.order_id, pending.seen = key, True
                pending.filled = max(pending.filled, counted.filled)
                pending.ts = max(pending.ts, ts)
        return Applied(symbol, added, realized, False)

    def _counted(self, key: str, ts: int) -> Counted:
        counted = self.orders.get(key)
        if counted is None:
            counted = self.orders[key] = Counted(ZERO, ZERO, ts)
        counted.ts = max(counted.ts, ts)
        return counted

    def _advance(self, counted: Counted, symbol: str, side: str, filled: Decimal, notional: Decimal | None, rates: Rates,
                 fallback: Decimal | None) -> tuple[Decimal, Decimal]:  # fmt: skip
        """Move the position by what ``filled`` (cumulative, with its ``notional``) adds to what is counted."""
        if filled <= counted.filled:
            return ZERO, ZERO
        added = filled - counted.filled
        if notional is not None and counted.notional is not None:
            price = (notional - counted.notional) / added
        elif notional is not None:
            price = notional / filled
        else:
            pos = self.positions.get(symbol)
            price = fallback if fallback is not None else (pos.avg_price if pos is not None else ZERO)
        price = self.rules[symbol].price(price)
        realized = self._apply(symbol, side, added, price, rates)
        counted.filled = filled
        counted.notional = notional if counted.notional is not None else None
        return added, realized

    def _apply(self, symbol: str, side: str, lots: Decimal, price: Decimal, rates: Rates) -> Decimal:
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position(self.rules[symbol])
        realized = pos.apply(side, lots, price)
        if not realized:
            return ZERO
        quote = pos.rules.quote
        try:
            booked = book(rates.convert(realized, quote, self.account))
        except MissingRate:
            self.cash[quote] = self.cash.get(quote, ZERO) + realized
            return ZERO
        self.cash[self.account] += booked
        return booked

    def expire(self, now: int, timeout_ms: int) -> list[Pending]:
        """Approvals not heard of (no order event, no fill) for ``timeout_ms``: they stop counting (the caller alerts)."""
        if not self.pending:
            return []
        gone = [p for p in self.pending.values() if now - p.ts >= timeout_ms]
        for p in gone:
            del self.pending[p.key]
        return gone

    def last_event(self) -> int | None:
        """The time of the newest fill or order event counted (or of the reconciliation that counted an order)."""
        newest = max(self.fills.values(), default=None)
        for counted in self.orders.values():
            if newest is None or counted.ts > newest:
                newest = counted.ts
        return newest

    def prune(self, now: int, keep_ms: int) -> None:
        for key in [k for k, c in self.orders.items() if c.done and now - c.ts > keep_ms]:
            del self.orders[key]
        for key in [k for k, ts in self.fills.items() if now - ts > keep_ms]:
            del self.fills[key]

    # ------------------------------------------------------------------ reconciliation

    def reconcile(self, state: Mapping[str, Any], now: int) -> list[str]:
        """Take the broker's view (``broker_state.v1``): balance, positions, what its orders and fills already count.

        Pending approvals the broker shows done (or filled) end; its open orders that match no
        approval count as pending. Returns problems worth an alert (unknown symbols)."""
        problems: list[str] = []
        self.cash = {self.account: dec(state["account"]["balance"])}
        self.positions = {}
        for row in state.get("positions", ()):
            symbol = row["symbol"]
            if symbol not in self.rules:
                problems.append(f"the broker holds {row['quantity']} lots of {symbol}, an instrument this topology does not know")
                continue
            qty = dec(row["quantity"])
            self.positions[symbol] = Position(self.rules[symbol], qty, dec(row["avg_price"]) if qty else ZERO)
        by_order: dict[str, tuple[Decimal, Decimal]] = {}
        for fill in state.get("fills", ()):
            qty, notional = by_order.get(fill["order_id"], (ZERO, ZERO))
            by_order[fill["order_id"]] = (qty + dec(fill["quantity"]), notional + dec(fill["quantity"]) * dec(fill["price"]))
            self.fills.setdefault(fill["fill_id"], int(fill["ts"]))
        for order_id, (qty, notional) in by_order.items():
            known = self.orders.get(order_id)
            self.orders[order_id] = Counted(qty, notional, now, known is not None and known.done, qty, notional)
        open_orders: dict[str, Mapping[str, Any]] = {}
        for row in state.get("orders", ()):
            order_id, status = row["order_id"], row["status"]
            filled = dec(row["filled_quantity"])
            known = self.orders.get(order_id)
            if known is None or known.filled < filled:
                self.orders[order_id] = Counted(filled, None, now, False, known.fill_qty if known else ZERO,
                                                known.fill_notional if known else ZERO)  # fmt: skip
            if status in ("accepted", "partially_filled"):
                open_orders[order_id] = row
            else:
                self.orders[order_id].done = status != "unknown"
        for pending in list(self.pending.values()):
            order_id = pending.client_order_id
            row = open_orders.pop(order_id, None) if order_id else None
            if row is not None:
                pending.order_id, pending.seen = order_id, True
                pending.filled = dec(row["filled_quantity"])
            elif order_id in self.orders and self.orders[order_id].done or order_id in by_order:
                del self.pending[pending.key]
        for order_id, row in open_orders.items():
            key = f"order:{order_id}"
            self.pending[key] = Pending(key, row["symbol"], row["side"], dec(row["quantity"]), now, order_id=order_id,
                                        filled=dec(row["filled_quantity"]), seen=True)  # fmt: skip
        return problems

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        return {
            "cash": {c: str(v) for c, v in sorted(self.cash.items())},
            "positions": {s: [str(p.quantity), str(p.avg_price)] for s, p in sorted(self.positions.items()) if p.quantity},
            "pending": [[p.key, p.symbol, p.side, str(p.quantity), p.ts, p.signal_id, p.order_id, str(p.filled), p.seen]
                        for p in self.pending.values()],  # fmt: skip
            "orders": {k: [str(c.filled), None if c.notional is None else str(c.notional), c.ts, c.done, str(c.fill_qty), str(c.fill_notional)]
                       for k, c in self.orders.items()},
            "fills": self.fills,
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        self.cash = {c: Decimal(v) for c, v in data["cash"].items()}
        self.cash.setdefault(self.account, ZERO)
        self.positions = {s: Position(self.rules[s], Decimal(q), Decimal(a)) for s, (q, a) in data["positions"].items() if s in self.rules}
        self.pending = {}
        for key, symbol, side, qty, ts, signal_id, order_id, filled, seen in data["pending"]:
            self.pending[key] = Pending(key, symbol, side, Decimal(qty), int(ts), signal_id, order_id, Decimal(filled), bool(seen))
        self.orders = {k: Counted(Decimal(f), None if n is None else Decimal(n), int(ts), bool(d), Decimal(fq), Decimal(fn))
                       for k, (f, n, ts, d, fq, fn) in data["orders"].items()}
        self.fills = {k: int(v) for k, v in data["fills"].items()}

    def open_symbols(self) -> Iterable[str]:
        return (s for s, p in self.positions.items() if p.quantity)
