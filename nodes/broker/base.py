"""The broker interface every implementation follows, and the values it speaks in.

A broker is asked, never trusted to push: :meth:`Broker.submit` answers with an :class:`Ack`
(accepted, rejected with an MT5 return code, or in doubt when the line dropped mid-request), and
executions are found by :meth:`Broker.poll`, which returns the deals of a recent window, seen or
not. The connector publishes each deal once by its ticket, so a deal seen by two polls, or by
polls on both sides of a restart, is one fill.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar

from framework.errors import FxflowError
from nodes.broker.journal import Journal


class BrokerUnavailable(FxflowError, ConnectionError):
    """The broker could not be reached (a dropped line, a terminal that does not answer)."""


class AckStatus(str, Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    IN_DOUBT = "in_doubt"
    """The request may or may not have reached the broker (the line dropped): found later by its id."""
    DUPLICATE = "duplicate"
    """The broker already has an order with this client order id: nothing was sent again."""


@dataclass(frozen=True, slots=True)
class OrderRequest:
    client_order_id: str
    order_id: str
    symbol: str
    side: str
    quantity: Decimal
    ts: int
    order_type: str = "market"
    stop_loss: Decimal | None = None
    """The position's stop (MT5's ``sl``): a long is closed at the market once the bid is at or below it."""
    take_profit: Decimal | None = None
    """The position's target (MT5's ``tp``): a long is closed at the market once the bid is at or above it."""

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> OrderRequest:
        """From an ``order_event.v1`` message (a level that is absent, null or not above 0 is none)."""
        from nodes.trading.instruments import dec

        def level(name: str) -> Decimal | None:
            value = event.get(name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            return dec(value) if number and value > 0 else None

        return cls(
            client_order_id=event["client_order_id"],
            order_id=event["order_id"],
            symbol=event["symbol"],
            side=event["side"],
            quantity=dec(event["quantity"]),
            ts=event["ts"],
            order_type=event.get("order_type", "market"),
            stop_loss=level("stop_loss"),
            take_profit=level("take_profit"),
        )


@dataclass(frozen=True, slots=True)
class Ack:
    status: AckStatus
    retcode: int | None = None
    message: str = ""
    broker_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class Deal:
    """One execution, as MT5 reports it in ``history_deals_get`` (money in the account currency)."""

    ticket: int
    order_ticket: int
    client_order_id: str | None
    symbol: str
    side: str
    entry: str
    """in, out or inout (a netting reversal)."""
    lots: Decimal
    price: Decimal
    ts: int
    commission: Decimal = Decimal(0)
    """Charged (> 0): MT5's deal commission and fee together, sign turned (MT5 reports charges negative)."""
    swap: Decimal = Decimal(0)
    profit: Decimal = Decimal(0)
    reason: str = "client"
    """client (our order), stop_out, sl or tp (the broker closed the position at its level), or other (placed outside
    fxflow)."""
    slippage: Decimal | None = None

    def to_json(self) -> dict[str, Any]:
        """Every field, Decimals as text (the fields are flat: no ``dataclasses.asdict`` deep copy, a fill's slowest step)."""
        out: dict[str, Any] = {}
        for name in _DEAL_FIELDS:
            value = getattr(self, name)
            out[name] = str(value) if isinstance(value, Decimal) else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Deal:
        values = dict(data)
        for name in ("lots", "price", "commission", "swap", "profit"):
            values[name] = Decimal(values[name])
        if values.get("slippage") is not None:
            values["slippage"] = Decimal(values["slippage"])
        return cls(**values)


_DEAL_FIELDS = tuple(f.name for f in fields(Deal))


@dataclass(frozen=True, slots=True)
class AccountView:
    currency: str
    balance: Decimal
    equity: Decimal
    margin: Decimal
    free_margin: Decimal


@dataclass(frozen=True, slots=True)
class PositionView:
    symbol: str
    quantity: Decimal
    """Signed lots: > 0 long."""
    avg_price: Decimal
    swap: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class OrderView:
    client_order_id: str
    symbol: str
    side: str
    quantity: Decimal
    filled: Decimal
    status: str
    """broker_state.v1's statuses: accepted, partially_filled, filled, cancelled, rejected, expired, unknown."""
    broker_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the broker did on its own that execution must hear of (a stop-out, a cancelled remainder)."""

    symbol: str
    order_id: str
    ts: int
    code: str
    message: str
    retcode: int | None = None
    filled: Decimal | None = None
    """``partial_fill``: the lots the order got before its rest was cancelled."""


@dataclass(slots=True)
class BrokerState:
    account: AccountView
    positions: list[PositionView]
    orders: list[OrderView] = field(default_factory=list)
    deals: list[Deal] = field(default_factory=list)
    connected: bool = True


class Broker(ABC):
    """Async: a blocking SDK runs its calls in a worker thread, never on the event loop."""

    kind: ClassVar[str]

    def __init__(self, journal: Journal | None = None) -> None:
        self.journal = journal or Journal()
        self.notices: list[Notice] = []
        self.revision = 0
        """Grows with every change to what :meth:`snapshot` returns (orders, deals, swaps): what needs saving."""

    @property
    def connected(self) -> bool:
        return True

    async def connect(self) -> None:
        """Open the session (log in); raises :class:`BrokerUnavailable`."""

    async def close(self) -> None:
        """End the session; what the broker keeps (its account, its history) stays there."""

    async def on_tick(self, tick: Mapping[str, Any]) -> None:
        """A quote (``tick.v1``). The paper broker's clock and prices; a real broker has its own."""

    async def on_bar(self, bar: Mapping[str, Any]) -> None:
        """A closed bar (``bar.v1``)."""

    @abstractmethod
    async def submit(self, order: OrderRequest) -> Ack: ...

    @abstractmethod
    async def poll(self) -> list[Deal]:
        """The deals of the recent window (already seen ones included: the caller dedups by ticket)."""

    @abstractmethod
    async def state(self, since_ms: int | None, client_order_ids: Iterable[str] = ()) -> BrokerState:
        """Account, positions, the orders asked for (or the open ones) and the deals at or after ``since_ms``."""

    def take_notices(self) -> list[Notice]:
        notices, self.notices = self.notices, []
        return notices

    def snapshot(self) -> dict[str, Any]:
        """What the broker needs after a restart, as JSON (a real broker keeps its own state: little)."""
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back :meth:`snapshot`."""
