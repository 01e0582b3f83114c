"""The order state machine: which event may move an order from which status, after NautilusTrader's table.

Statuses are those of ``order_event.v1``. An event that the table does not allow from the
order's status raises :class:`InvalidTransition` and leaves the order as it was; the execution
service records and alerts it, and never guesses. Fills are applied once per ``fill_id``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum

from framework.errors import FxflowError


class OrderStatus(str, Enum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    FAILED = "failed"
    EXPIRED = "expired"


S = OrderStatus
TERMINAL = frozenset({S.FILLED, S.CANCELLED, S.REJECTED, S.FAILED, S.EXPIRED})
OPEN = frozenset({S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED})

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.SUBMITTED, S.REJECTED, S.FAILED}),
    S.SUBMITTED: frozenset({S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED, S.REJECTED, S.CANCELLED, S.EXPIRED, S.FAILED}),
    S.ACCEPTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.EXPIRED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.EXPIRED}),
}
"""status → the statuses it may move to. A submitted order may fill before its acknowledgement
arrives (brokers send both, in either order); a cancel or expiry of a partially filled order
keeps what was filled. ``failed``: we could not tell the broker (never sent, or no answer)."""


class InvalidTransition(FxflowError, ValueError):
    pass


def client_order_id(signal_id: str, leg: int = 0) -> str:
    """The order id of a signal: the same signal always gives the same id (a duplicate signal
    cannot open a second order, and a broker that saw the id before refuses it again)."""
    digest = hashlib.sha256(f"{signal_id}/{leg}".encode()).hexdigest()[:20]
    return f"o-{digest}"


@dataclass
class Order:
    order_id: str
    symbol: str
    side: str
    quantity: Decimal
    status: OrderStatus = S.PENDING
    filled: Decimal = Decimal(0)
    avg_price: Decimal | None = None
    fills: dict[str, Decimal] = field(default_factory=dict)
    """fill_id → quantity, so a fill delivered twice is applied once."""

    @property
    def open(self) -> bool:
        return self.status in OPEN

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    def move(self, status: OrderStatus) -> None:
        if status not in TRANSITIONS.get(self.status, frozenset()):
            raise InvalidTransition(f"order {self.order_id}: {self.status.value} → {status.value} is not allowed")
        self.status = status

    def fill(self, fill_id: str, quantity: Decimal, price: Decimal) -> bool:
        """Apply a fill; False when ``fill_id`` was applied before. Moves to partially filled or filled."""
        if fill_id in self.fills:
            return False
        if quantity <= 0 or quantity > self.remaining:
            raise InvalidTransition(f"order {self.order_id}: a fill of {quantity} with {self.remaining} remaining")
        self.move(S.FILLED if quantity == self.remaining else S.PARTIALLY_FILLED)
        self._count(fill_id, quantity, price)
        return True

    def fill_cancelled(self, fill_id: str, quantity: Decimal, price: Decimal) -> bool:
        """Apply a fill of the part a broker filled before it cancelled the rest, heard of after the cancel; the
        order stays cancelled. False when ``fill_id`` was applied before.

        MT5 answers a partly filled order with 10010 and reports its deals apart, so the cancel can overtake
        some of them. NautilusTrader allows canceled → filled for this "real world possibility"; a cancelled
        order here does not reopen, it counts the fill (within its quantity)."""
        if fill_id in self.fills:
            return False
        if self.status is not S.CANCELLED:
            raise InvalidTransition(f"order {self.order_id}: {self.status.value}, not cancelled")
        if quantity <= 0 or quantity > self.remaining:
            raise InvalidTransition(f"order {self.order_id}: a fill of {quantity} with {self.remaining} remaining")
        self._count(fill_id, quantity, price)
        return True

    def _count(self, fill_id: str, quantity: Decimal, price: Decimal) -> None:
        total = self.filled + quantity
        self.avg_price = price if self.avg_price is None else (self.avg_price * self.filled + price * quantity) / total
        self.filled = total
        self.fills[fill_id] = quantity
