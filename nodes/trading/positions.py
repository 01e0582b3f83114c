"""Netting positions: one signed quantity per symbol, its average price and the P&L it realized.

Quantities are in lots (``Decimal``), prices on the instrument's tick. A fill that reduces the
position realizes ``(exit - average) × closed units`` in the quote currency; one that crosses
zero closes the old side and opens the rest on the other at the fill price. The caller converts
realized P&L to the account currency at the time of the fill (:mod:`nodes.trading.money`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from nodes.trading.instruments import Rules

ZERO = Decimal(0)


@dataclass
class Position:
    rules: Rules
    quantity: Decimal = ZERO
    """Signed lots: > 0 long, < 0 short."""
    avg_price: Decimal = ZERO

    @property
    def flat(self) -> bool:
        return self.quantity == 0

    def apply(self, side: str, lots: Decimal, price: Decimal) -> Decimal:
        """Apply a fill; returns the P&L it realized, in the quote currency."""
        signed = lots if side == "buy" else -lots
        held = self.quantity
        if held == 0 or (held > 0) == (signed > 0):
            total = held + signed
            self.avg_price = (self.avg_price * abs(held) + price * lots) / abs(total)
            self.quantity = total
            return ZERO
        closed = min(abs(held), lots)
        direction = 1 if held > 0 else -1
        realized = (price - self.avg_price) * self.rules.units(closed) * direction
        self.quantity = held + signed
        if self.quantity == 0:
            self.avg_price = ZERO
        elif (self.quantity > 0) != (held > 0):
            self.avg_price = price
        return realized

    def unrealized(self, bid: Decimal, ask: Decimal) -> Decimal:
        """Marked at the price that would close it (bid for a long, ask for a short), in the quote currency."""
        if self.quantity == 0:
            return ZERO
        mark = bid if self.quantity > 0 else ask
        return (mark - self.avg_price) * self.rules.units(abs(self.quantity)) * (1 if self.quantity > 0 else -1)
