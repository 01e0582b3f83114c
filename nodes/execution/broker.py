"""What the broker tells the execution service, and what it means for our orders.

**Errors** (``broker_error.v1``): the MT5 retcode decides. A refusal (10019 no money, 10014
volume, 10018 market closed, 10006 reject, …) rejects the order: the broker said no. 10031 (no
connection to the trade server), the terminal's own IPC errors (negative codes) and ``stale_order``
(the connector would not send an order that old) fail it: the request never got there. 10010 (done
partially) cancels it: the broker filled a part and cancelled the rest, so the order ends cancelled
with its fills kept. 10012 (timeout) is ambiguous, the order may have been executed, so the
order stays submitted and the broker is asked about it (as Nautilus treats a submit whose outcome
is unknown: it waits for reconciliation instead of guessing).

**State** (``broker_state.v1``, the reply to a ``broker_query.v1``): its open orders and their
status, its net positions and the fills since a time. :func:`resolution` says where each of our
orders goes given the broker's view of it, after NautilusTrader's reconciliation tables
(``docs/concepts/live.md``): an order the broker does not know was never placed (failed), or, once
accepted or partly filled, is gone (cancelled, the fills kept); an expiry is published as a
cancel whose reason says so (``order_event.v1`` has no ``expired`` status).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from nodes.trading.instruments import dec
from nodes.trading.orders import TRANSITIONS, Order, OrderStatus

S = OrderStatus

NEVER_ARRIVED = {10031: "no connection to the trade server"}
NOT_SENT = frozenset({"stale_order", "no_connection"})
"""Codes of errors without a retcode that say the order never reached the broker."""
AMBIGUOUS = {10012: "timed out: the order may have been executed"}
DONE_PARTIAL = 10010
"""Filled in part, the rest cancelled (MT5's answer to an IOC order it could fill only in part)."""


def error_outcome(error: Mapping[str, Any]) -> tuple[OrderStatus | None, str]:
    """The status a broker error moves its order to (None: unknown, ask the broker) and the reason."""
    retcode = error.get("retcode")
    code = str(error.get("code", "error"))
    reason = f"{code}: {error.get('message', '')}".rstrip(": ")
    if isinstance(retcode, int):
        reason += f" (MT5 retcode {retcode})"
    if retcode in AMBIGUOUS or (retcode is None and code == "timeout"):
        return None, reason
    if retcode == DONE_PARTIAL or (retcode is None and code == "partial_fill"):
        return S.CANCELLED, reason
    if retcode in NEVER_ARRIVED or (isinstance(retcode, int) and retcode < 0) or (retcode is None and code in NOT_SENT):
        return S.FAILED, reason
    return S.REJECTED, reason


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    order_id: str
    status: str
    quantity: Decimal
    filled: Decimal
    broker_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerState:
    connected: bool
    orders: dict[str, BrokerOrder]
    positions: dict[str, Decimal]
    """Signed lots per symbol."""
    fills: list[dict[str, Any]]
    """fill.v1 messages, oldest first."""


def parse_state(reply: Any) -> BrokerState:
    """A ``broker_state.v1`` reply; ValueError naming what is wrong with it."""
    if not isinstance(reply, Mapping):
        raise ValueError(f"the broker's reply is a {type(reply).__name__}, not a broker_state.v1 object")
    try:
        orders = {
            o["order_id"]: BrokerOrder(
                o["order_id"], o["status"], dec(o["quantity"]), dec(o["filled_quantity"]), o.get("broker_order_id")
            )
            for o in reply["orders"]
        }
        positions: dict[str, Decimal] = {}
        for p in reply["positions"]:
            positions[p["symbol"]] = positions.get(p["symbol"], Decimal(0)) + dec(p["quantity"])
        fills = sorted(reply["fills"], key=lambda f: (f["ts"], f["fill_id"]))
    except (KeyError, TypeError, InvalidOperation) as exc:
        raise ValueError(f"the broker's reply is not a broker_state.v1: {type(exc).__name__}: {exc}") from None
    return BrokerState(bool(reply.get("connected", True)), orders, positions, fills)


def resolution(order: Order, theirs: BrokerOrder | None) -> tuple[OrderStatus | None, str | None]:
    """Where ``order`` goes given the broker's view of it (after its fills were applied): a status
    and the reason, or ``(None, None)`` when it stays where it is."""
    status = order.status
    if theirs is None or theirs.status == "unknown":
        if status is S.SUBMITTED and not order.filled:
            return S.FAILED, "the broker does not know the order: it never arrived"
        if status in (S.ACCEPTED, S.PARTIALLY_FILLED, S.SUBMITTED):
            return S.CANCELLED, "the broker no longer has the order" + ("; its filled part stands" if order.filled else "")
        return None, None
    if theirs.status in ("accepted", "partially_filled", "filled"):
        if status is S.SUBMITTED:
            return S.ACCEPTED, "acknowledged: the broker has the order"
        return None, None
    if theirs.status == "expired":
        return _allowed(status, S.CANCELLED, "expired at the broker")
    if theirs.status == "cancelled":
        return _allowed(status, S.CANCELLED, "cancelled by the broker")
    if theirs.status == "rejected":
        if S.REJECTED in TRANSITIONS.get(status, ()):
            return S.REJECTED, "rejected by the broker"
        return _allowed(status, S.CANCELLED, "rejected by the broker after it accepted the order")
    return None, None


def _allowed(status: OrderStatus, target: OrderStatus, reason: str) -> tuple[OrderStatus | None, str | None]:
    return (target, reason) if target in TRANSITIONS.get(status, ()) else (None, None)


def position_differences(ours: Mapping[str, Decimal], theirs: Mapping[str, Decimal]) -> list[tuple[str, Decimal, Decimal]]:
    """``(symbol, our lots, the broker's lots)`` wherever the net positions differ, in symbol order."""
    symbols = sorted(set(ours) | set(theirs))
    return [(s, ours.get(s, Decimal(0)), theirs.get(s, Decimal(0))) for s in symbols if ours.get(s, 0) != theirs.get(s, 0)]
