"""Position sizes from the money at risk: risk per trade as a share of equity over the stop distance.

A stop ``d`` price units away loses ``d × units per lot`` of the quote currency per lot
(EURUSD: dollars; USDJPY: yen; XAUUSD: dollars for 100 ounces). The money at risk is turned
into the quote currency at the latest price (``Rates``: 1,000 USD is 150,000 JPY at USDJPY
150), so the common cases (quote = account currency, or a pair of the two) are exact, and the
size is rounded down to the lot step by ``Rules.lots``: never more risk than asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from nodes.trading.instruments import Rules, VolumeError, dec
from nodes.trading.money import Rates


def pip_value(rules: Rules, rates: Rates, account: str) -> Decimal:
    """What one pip is worth for one lot, in the account currency (EURUSD 10 USD, USDJPY 1,000 JPY, XAUUSD 1 USD)."""
    return rates.convert(rules.pip * rules.lot_units, rules.quote, account)


def stop_distance(rules: Rules, atr: float, multiple: float) -> Decimal:
    """``multiple`` ATRs on the instrument's tick (0 when the ATR is below half a tick)."""
    return rules.price(dec(atr) * dec(multiple))


@dataclass(frozen=True, slots=True)
class Size:
    lots: Decimal
    raw: Decimal
    """The unrounded size the risk allows."""
    risk: Decimal
    """Money at risk, account currency."""
    loss_per_lot: Decimal
    """What the stop costs per lot, account currency."""
    capped: bool
    """The risk allowed more than the instrument's maximum volume."""

    def record(self) -> dict[str, float | bool]:
        return {"lots": float(self.lots), "raw_lots": round(float(self.raw), 6), "risk": round(float(self.risk), 2),
                "loss_per_lot": round(float(self.loss_per_lot), 4), "capped": self.capped}  # fmt: skip


def risk_size(equity: Decimal, risk_share: float, distance: Decimal, rules: Rules, rates: Rates, account: str) -> Size:
    """Lots whose stop ``distance`` away loses ``risk_share`` of ``equity``, rounded down to the lot step.

    Raises :class:`VolumeError` when that is below the instrument's minimum volume, and
    ``MissingRate`` when no price converts the account currency to the quote currency."""
    if distance <= 0:
        raise VolumeError(f"{rules.symbol}: a stop distance of {distance} cannot size a position")
    risk = equity * dec(risk_share)
    risk_quote = rates.convert(risk, account, rules.quote)
    raw = risk_quote / (distance * rules.lot_units)
    capped = raw > rules.max_lot
    lots = rules.lots(rules.max_lot if capped else raw)
    loss_per_lot = rates.convert(distance * rules.lot_units, rules.quote, account)
    return Size(lots, raw, risk, loss_per_lot, capped)


def fixed_size(lots: float, rules: Rules) -> Size:
    """A fixed number of lots (on the lot step), for strategies compared with a reference at a given size."""
    size = rules.lots(lots)
    return Size(size, dec(lots), Decimal(0), Decimal(0), False)
