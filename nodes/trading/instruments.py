"""An instrument's trading rules as exact numbers: price ticks, lot steps, units per lot, currencies."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any

from framework.errors import FxflowError

log = logging.getLogger("fxflow.trading")


class VolumeError(FxflowError, ValueError):
    """A volume the instrument cannot trade (below the minimum, above the maximum, not positive)."""


def dec(value: Any) -> Decimal:
    """A float, int or str as the Decimal it was written as (``0.1`` → ``Decimal('0.1')``, not its binary value)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


@dataclass(frozen=True, slots=True)
class Rules:
    symbol: str
    tick: Decimal
    """The smallest price step (10**-digits)."""
    pip: Decimal
    lot_step: Decimal
    min_lot: Decimal
    max_lot: Decimal
    lot_units: Decimal
    """Units of the base currency (ounces of gold) in one lot."""
    base: str
    quote: str

    @classmethod
    def of(cls, symbol: str, instrument: Any) -> Rules:
        """From a topology ``Instrument`` (``ctx.instrument(symbol)``)."""
        base, quote = instrument.currencies(symbol)
        return cls(
            symbol=symbol,
            tick=Decimal(1).scaleb(-instrument.digits),
            pip=dec(instrument.pip),
            lot_step=dec(instrument.lot_step),
            min_lot=dec(instrument.min_lot),
            max_lot=dec(instrument.max_lot),
            lot_units=dec(instrument.lot_units()),
            base=base,
            quote=quote,
        )

    @classmethod
    def table(cls, instruments: Mapping[str, Any], service: str) -> dict[str, Rules]:
        """The rules of every instrument a service trades (``ctx.instruments``); one that cannot be traded
        here (unknown currencies, bad sizes) is left out with a warning, not a failed start."""
        rules: dict[str, Rules] = {}
        for symbol, instrument in instruments.items():
            try:
                rules[symbol] = cls.of(symbol, instrument)
            except ValueError as exc:
                log.warning("%s: %s is not tradable here: %s", service, symbol, exc)
        return rules

    def price(self, value: Any) -> Decimal:
        """``value`` on the instrument's tick (half to even)."""
        return dec(value).quantize(self.tick, rounding=ROUND_HALF_EVEN)

    def lots(self, value: Any) -> Decimal:
        """``value`` lots rounded down to the lot step (never more than asked), within the bounds.

        Raises :class:`VolumeError` for a volume that rounds below the minimum or exceeds the maximum."""
        raw = dec(value)
        if not raw.is_finite() or raw <= 0:
            raise VolumeError(f"{self.symbol}: volume {value!r} is not a positive number of lots")
        lots = (raw / self.lot_step).to_integral_value(rounding=ROUND_DOWN) * self.lot_step
        if lots < self.min_lot:
            raise VolumeError(f"{self.symbol}: volume {value} lots is below the minimum of {self.min_lot}")
        if lots > self.max_lot:
            raise VolumeError(f"{self.symbol}: volume {value} lots is above the maximum of {self.max_lot}")
        return lots.normalize() if lots == lots.to_integral_value() else lots

    def units(self, lots: Decimal) -> Decimal:
        return lots * self.lot_units

    def pips(self, price_distance: Any) -> Decimal:
        return dec(price_distance) / self.pip
