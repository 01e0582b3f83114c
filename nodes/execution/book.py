"""The execution service's own orders: each order's state machine plus what the service knows around it.

An order's id is :func:`~nodes.trading.orders.client_order_id` of its signal, so the book is
also the set of signals already turned into orders (a duplicate signal finds its order here).
Fill ids applied are kept for every fill, also those of orders the service does not know, so
a fill delivered twice (a redelivery, a reconciliation overlapping the live stream) moves a
position once. Finished orders and old fill ids are forgotten after ``keep``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from nodes.trading.orders import OPEN, Order, OrderStatus

S = OrderStatus


@dataclass
class Tracked:
    order: Order
    signal_id: str
    decision_id: str
    created_ms: int
    updated_ms: int
    submitted_ms: int | None = None
    broker_order_id: str | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    reason: str | None = None
    query_due_ms: int | None = None
    """When to ask the broker about a submitted order nothing was heard of (None: not waiting)."""
    queries: int = 0
    """Queries about it the broker left unanswered."""
    final: OrderStatus | None = None
    """A terminal status the orders table holds for it that the restored state had not reached:
    applied at reconciliation, after the broker's fills (which a cancel may follow)."""
    cancel_after_fill: str | None = None
    """The reason of a cancelled remainder (10010) heard of before any fill of the order: fills and
    errors travel on separate subjects, so the fill may come second; the order is cancelled once it
    is applied (or when the broker, asked, says so)."""
    rest_cancelled: bool = False
    """The broker cancelled the rest after filling a part (10010): fills of the order heard of after the cancel
    (its deals and the cancel travel apart, and a partial fill may have several deals) still count on it."""

    @property
    def status(self) -> OrderStatus:
        return self.order.status

    def to_json(self) -> dict[str, Any]:
        o = self.order
        return {
            "order_id": o.order_id,
            "symbol": o.symbol,
            "side": o.side,
            "quantity": str(o.quantity),
            "status": o.status.value,
            "filled": str(o.filled),
            "avg_price": None if o.avg_price is None else str(o.avg_price),
            "fills": {k: str(v) for k, v in o.fills.items()},
            "signal_id": self.signal_id,
            "decision_id": self.decision_id,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "submitted_ms": self.submitted_ms,
            "broker_order_id": self.broker_order_id,
            "stop_loss": _text(self.stop_loss),
            "take_profit": _text(self.take_profit),
            "reason": self.reason,
            "query_due_ms": self.query_due_ms,
            "queries": self.queries,
            "final": None if self.final is None else self.final.value,
            "cancel_after_fill": self.cancel_after_fill,
            **({"rest_cancelled": True} if self.rest_cancelled else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Tracked:
        order = Order(
            d["order_id"],
            d["symbol"],
            d["side"],
            Decimal(d["quantity"]),
            status=S(d["status"]),
            filled=Decimal(d["filled"]),
            avg_price=_number(d["avg_price"]),
            fills={k: Decimal(v) for k, v in d["fills"].items()},
        )
        return cls(
            order=order,
            signal_id=d["signal_id"],
            decision_id=d["decision_id"],
            created_ms=d["created_ms"],
            updated_ms=d["updated_ms"],
            submitted_ms=d["submitted_ms"],
            broker_order_id=d["broker_order_id"],
            stop_loss=_number(d["stop_loss"]),
            take_profit=_number(d["take_profit"]),
            reason=d["reason"],
            query_due_ms=d["query_due_ms"],
            queries=d["queries"],
            final=None if d["final"] is None else S(d["final"]),
            cancel_after_fill=d.get("cancel_after_fill"),
            rest_cancelled=bool(d.get("rest_cancelled", False)),
        )


class OrderBook:
    """Changes to an order's ``updated_ms`` go through :meth:`touch` and new fill ids through :meth:`note_fill`:
    :meth:`prune` pops what may have grown old from min-heaps instead of walking everything kept."""

    def __init__(self) -> None:
        self.orders: dict[str, Tracked] = {}
        self.fill_ids: dict[str, int] = {}
        """fill_id → the fill's ts, for every fill applied (any order, known or not)."""
        self._by_update: list[tuple[int, int, Tracked]] = []
        """(time, sequence, order): each kept order has an entry no later than its ``updated_ms``. Entries of an
        order no longer kept under its id are skipped."""
        self._by_fill_ts: list[tuple[int, int, str]] = []
        """(ts, sequence, fill id) of each fill id noted; an entry whose ts is not the id's (any more) is skipped."""
        self._pushed = 0
        self._by_broker_id: dict[str, str] = {}
        self._live: dict[str, Tracked] = {}
        """Orders that were not terminal when last looked at (a terminal status is final): the pending and
        open ones are among them, so finding those never walks the finished orders a long run keeps."""

    def __contains__(self, order_id: str) -> bool:
        return order_id in self.orders

    def add(self, tracked: Tracked) -> None:
        self.orders[tracked.order.order_id] = tracked
        self._push(tracked, tracked.updated_ms)
        if not tracked.order.done:
            self._live[tracked.order.order_id] = tracked
        if tracked.broker_order_id:
            self._by_broker_id[tracked.broker_order_id] = tracked.order.order_id

    def touch(self, tracked: Tracked, at: int) -> None:
        """Set ``tracked.updated_ms`` (event time: it may go back)."""
        if at < tracked.updated_ms:
            self._push(tracked, at)
        tracked.updated_ms = at

    def note_fill(self, fill_id: str, ts: int) -> None:
        self.fill_ids[fill_id] = ts
        self._pushed += 1
        heapq.heappush(self._by_fill_ts, (ts, self._pushed, fill_id))

    def _push(self, tracked: Tracked, at: int) -> None:
        self._pushed += 1
        heapq.heappush(self._by_update, (at, self._pushed, tracked))

    def find(self, order_id: str | None, broker_order_id: str | None = None) -> Tracked | None:
        """Our order by its id, else by the broker's id for it."""
        tracked = self.orders.get(order_id) if order_id else None
        if tracked is None and broker_order_id:
            own = self._by_broker_id.get(broker_order_id)
            tracked = self.orders.get(own) if own else None
        return tracked

    def note_broker_id(self, tracked: Tracked, broker_order_id: str | None) -> None:
        if broker_order_id and tracked.broker_order_id != broker_order_id:
            tracked.broker_order_id = broker_order_id
            self._by_broker_id[broker_order_id] = tracked.order.order_id

    def _unfinished(self) -> list[Tracked]:
        live = self._live
        done = [k for k, t in live.items() if t.order.done]
        for key in done:
            del live[key]
        return list(live.values())

    def pending(self) -> list[Tracked]:
        """Orders not sent yet (held until the service is reconciled with the broker)."""
        return [t for t in self._unfinished() if t.status is S.PENDING]

    def open(self) -> list[Tracked]:
        """Orders the broker has or may have: submitted, accepted, partially filled."""
        return [t for t in self._unfinished() if t.status in OPEN]

    def unsettled(self) -> Iterator[Tracked]:
        """Orders whose table status is ahead of the restored state (see :attr:`Tracked.final`)."""
        return (t for t in self.orders.values() if t.final is not None)

    def prune(self, orders_before_ms: int, fills_before_ms: int) -> int:
        """Forget finished orders last changed before ``orders_before_ms``, and the ids of fills made before
        ``fills_before_ms`` (which must stay before any fills query a reconciliation may make)."""
        gone = 0
        by_update, kept = self._by_update, {}
        while by_update and by_update[0][0] < orders_before_ms:
            tracked = heapq.heappop(by_update)[2]
            key = tracked.order.order_id
            if self.orders.get(key) is not tracked:
                continue
            if tracked.order.done and tracked.final is None and tracked.updated_ms < orders_before_ms:
                gone += 1
                del self.orders[key]
                self._live.pop(key, None)
                if tracked.broker_order_id:
                    self._by_broker_id.pop(tracked.broker_order_id, None)
            else:
                kept[key] = tracked
        for tracked in kept.values():
            self._push(tracked, tracked.updated_ms)
        by_fill_ts = self._by_fill_ts
        while by_fill_ts and by_fill_ts[0][0] < fills_before_ms:
            ts, _, fill_id = heapq.heappop(by_fill_ts)
            if self.fill_ids.get(fill_id) == ts:
                del self.fill_ids[fill_id]
        return gone

    def to_json(self) -> dict[str, Any]:
        return {"orders": [t.to_json() for t in self.orders.values()], "fill_ids": self.fill_ids}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OrderBook:
        book = cls()
        for item in d["orders"]:
            book.add(Tracked.from_json(item))
        for fill_id, ts in d["fill_ids"].items():
            book.note_fill(str(fill_id), int(ts))
        return book


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _number(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
