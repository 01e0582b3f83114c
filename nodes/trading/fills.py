"""What makes a ``broker.fill`` message one that execution and performance can book (both read the same fills)."""

from __future__ import annotations

from collections.abc import Container, Mapping
from decimal import Decimal
from typing import Any

from nodes.trading.instruments import dec
from nodes.trading.money import book

MAX_AMOUNT = 1e15
"""An amount in the account currency beyond any account's: a commission or swap past it is a broken message (and
could not be booked to the cent)."""
MAX_NOTIONAL = 1e15
"""Quantity × price beyond any fill's (100 lots of gold at 3,000 is 3e5): P&L from such a fill overflows the cent
(``Decimal`` precision), so a fill past it would fail every later booking of its symbol."""
FILL_FIELDS = ("fill_id", "order_id", "symbol", "side", "quantity", "price", "ts", "commission")


def is_number(value: Any) -> bool:
    """An int or float that is not NaN (and not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def fill_problem(fill: Mapping[str, Any], symbols: Container[str]) -> str | None:
    """Why ``fill`` cannot be booked (the dead letter's reason), or None for a fill of one of ``symbols``."""
    missing = [f for f in FILL_FIELDS if f not in fill]
    if missing:
        return f"fill without {', '.join(missing)}"
    for name in ("fill_id", "order_id"):
        if not isinstance(fill[name], str) or not 0 < len(fill[name]) <= 128:
            return f"fill {name} {fill[name]!r} is not an id (a string of 1 to 128 characters)"
    if not isinstance(fill["symbol"], str) or fill["symbol"] not in symbols:
        return f"fill for unknown symbol {fill['symbol']!r}"
    if fill["side"] not in ("buy", "sell"):
        return f"fill side {fill['side']!r} is neither buy nor sell"
    for name in ("quantity", "price"):
        if not is_number(fill[name]) or fill[name] <= 0:
            return f"fill {name} {fill[name]!r} is not a positive number"
    if not fill["quantity"] * fill["price"] < MAX_NOTIONAL:
        return f"fill of {fill['quantity']!r} lots at {fill['price']!r} is beyond any account (quantity × price ≥ {MAX_NOTIONAL:g})"
    if not is_number(fill["commission"]) or not isinstance(fill["ts"], int) or isinstance(fill["ts"], bool):
        return "fill commission or ts is not a number"
    for name in ("commission", "swap", "profit"):
        if name in fill and not (is_number(fill[name]) and abs(fill[name]) < MAX_AMOUNT):
            return f"fill {name} {fill[name]!r} is not an amount (a finite number below {MAX_AMOUNT:g})"
    return None


def fill_swap(fill: Mapping[str, Any]) -> Decimal:
    """The swap a checked fill realized, booked in the account currency (signed as MT5's: < 0 charged); 0 when it has none."""
    swap = fill.get("swap")
    return book(dec(swap)) if swap else Decimal(0)


def fill_profit(fill: Mapping[str, Any]) -> Decimal | None:
    """The P&L the broker booked for a checked fill, in the account currency; None when the fill does not say."""
    profit = fill.get("profit")
    return None if profit is None else book(dec(profit))
