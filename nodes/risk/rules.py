"""The risk rules, each a small function returning a :class:`Check`.

A check passes at its limit and fails past it (``<=``), on exact decimals where money is
involved, so a test can put a value exactly at the limit. Its record (``Check.record()``) goes
into the decision's ``checks`` with the numbers it compared, so a rejection explains itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

from nodes.risk.calendar import Release
from nodes.risk.state import TradingState


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool | None
    """True passed, False failed, None not evaluated (``detail`` says why)."""
    reason: str | None = None
    """One line, when it failed."""
    detail: Mapping[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"ok": self.ok, **self.detail} if self.reason is None else {"ok": self.ok, "reason": self.reason, **self.detail}


def passed(**detail: Any) -> Check:
    return Check(True, None, detail) if detail else _PASSED


def failed(reason: str, **detail: Any) -> Check:
    return Check(False, reason, detail)


_PASSED = Check(True)
_SKIPPED: dict[str, Check] = {}


def skipped(why: str, **detail: Any) -> Check:
    if detail:
        return Check(None, None, {"skipped": why, **detail})
    check = _SKIPPED.get(why)
    if check is None:  # most decisions skip the same checks for the same few reasons: one Check each (frozen, shared)
        check = Check(None, None, {"skipped": why})
        if len(_SKIPPED) < 256:
            _SKIPPED[why] = check
    return check


def skipped_records(names: Iterable[str], why: str) -> dict[str, dict[str, Any]]:
    """``{name: skipped(why).record()}`` for each of ``names``, built at once (a fresh dict each: records are published):
    most decisions skip the whole opening part for one reason."""
    return {name: {"ok": None, "skipped": why} for name in names}


@lru_cache(maxsize=256, typed=True)
def exact(limit: float) -> Decimal:
    """A limit written as a float, as the exact decimal it was written as (``0.03`` → ``Decimal('0.03')``); the few
    limits of a run are converted once."""
    return Decimal(repr(limit))


def _f(value: Decimal, places: int = 2) -> float:
    return round(float(value), places)


# --------------------------------------------------------------------------- signals


def stale(signal_ts: int, ttl_ms: int, now: int, max_skew_ms: int) -> Check:
    """A signal is stale from ``ts + ttl`` on; one stamped more than ``max_skew`` ahead of the clock is refused too."""
    age = now - signal_ts
    detail = {"age_ms": age, "ttl_ms": ttl_ms}
    if age >= ttl_ms:
        return failed(f"stale signal: {age} ms old, its time to live is {ttl_ms} ms", **detail)
    if -age > max_skew_ms:
        return failed(f"signal from the future: stamped {-age} ms ahead of the clock (more than {max_skew_ms} ms)", **detail)
    return passed(**detail)


def confidence(value: float, minimum: float) -> Check:
    if value < minimum:
        return failed(f"confidence {value:g} is below {minimum:g}", confidence=value, min=minimum)
    return passed(confidence=value, min=minimum)


class Throttle:
    """At most ``limit`` approvals in any ``window_ms`` (a sliding window on the clock), after Nautilus's order rate limit.

    Checking changes nothing: a signal's time is only trusted once it passed the stale check, so only then does the
    engine :meth:`expire` the approvals that left every later window."""

    def __init__(self, limit: int, window_ms: int) -> None:
        self.limit = limit
        self.window_ms = window_ms
        self.times: deque[int] = deque()

    def expire(self, now: int) -> None:
        while self.times and self.times[0] <= now - self.window_ms:
            self.times.popleft()

    def check(self, now: int) -> Check:
        cutoff = now - self.window_ms
        recent = sum(1 for t in self.times if t > cutoff)
        detail = {"recent": recent, "limit": self.limit, "window_ms": self.window_ms}
        if recent >= self.limit:
            return failed(f"throttled: {recent} approvals in the last {self.window_ms} ms (limit {self.limit})", **detail)
        return passed(**detail)

    def record(self, now: int) -> None:
        self.times.append(now)


# --------------------------------------------------------------------------- state


@lru_cache(maxsize=64, typed=True)
def trading_state(state: TradingState, opens: bool, closes: bool) -> Check:
    """Halted passes nothing; reducing passes what closes (the opening part is trimmed by the caller). A function of
    three small values: each result is made once (frozen, shared)."""
    detail = {"state": state.value}
    if state is TradingState.HALTED:
        return failed("trading is halted", **detail)
    if state is TradingState.REDUCING and opens and not closes:
        return failed("trading is reducing: only orders that reduce a position pass", **detail)
    return passed(**detail)


# --------------------------------------------------------------------------- market


def quote_age(symbol: str, quote_ts: int | None, now: int, max_age_ms: int) -> Check:
    if quote_ts is None:
        return failed(f"no price yet for {symbol}")
    age = now - quote_ts
    if age > max_age_ms:
        return failed(f"stale price for {symbol}: {age} ms old (limit {max_age_ms} ms)", age_ms=age, max_age_ms=max_age_ms)
    return passed(age_ms=age, max_age_ms=max_age_ms)


def spread(bid: Decimal, ask: Decimal | None, pip: Decimal, limit_pips: float, allow_unknown: bool) -> Check:
    """The latest quote's spread in pips against the symbol's limit (``ask`` None: a bar without spreads)."""
    if ask is None:
        if allow_unknown:
            return passed(spread_pips=None, limit_pips=limit_pips, note="price from a bar without spread")
        return failed("spread unknown: the latest price is a bar without spread", spread_pips=None, limit_pips=limit_pips)
    pips = (ask - bid) / pip
    detail = {"spread_pips": _f(pips, 3), "limit_pips": limit_pips}
    if pips > exact(limit_pips):
        return failed(f"spread {_f(pips, 3):g} pips is wider than {limit_pips:g}", **detail)
    return passed(**detail)


def calendar(releases: Iterable[Release], currencies: Iterable[str]) -> Check:
    hits = list(releases)
    detail = {"currencies": sorted(set(currencies))}
    if hits:
        first = hits[0]
        return failed(
            f"high-impact release {first.title!r} ({first.currency}) at {first.ts}: no new positions around it",
            releases=[{"series": r.series, "currency": r.currency, "ts": r.ts} for r in hits],
            **detail,
        )
    return passed(**detail)


# --------------------------------------------------------------------------- exposure


def symbol_exposure(symbol: str, after: Decimal, before: Decimal, limit: float) -> Check:
    """Notional of the symbol's position after the order (account currency); an order that shrinks it passes."""
    cap = exact(limit)
    detail = {"before": _f(before), "after": _f(after), "limit": limit}
    if after > cap and after > before:
        return failed(f"{symbol} exposure {_f(after):,.2f} would exceed {limit:,.2f}", **detail)
    return passed(**detail)


def currency_exposure(before: Mapping[str, Decimal], after: Mapping[str, Decimal], limit: float) -> Check:
    """Net exposure per currency after the order; a currency past the limit fails only if the order grows it."""
    cap = exact(limit)
    over = [c for c, v in sorted(after.items()) if abs(v) > cap and abs(v) > abs(before.get(c, Decimal(0)))]
    detail = {"after": {c: _f(v) for c, v in sorted(after.items())}, "limit": limit}
    if over:
        worst = over[0]
        return failed(f"{worst} exposure {_f(after[worst]):,.2f} would exceed ±{limit:,.2f}", over=over, **detail)
    return passed(**detail)


def open_positions(count_after: int, count_before: int, limit: int) -> Check:
    detail = {"before": count_before, "after": count_after, "limit": limit}
    if count_after > limit and count_after > count_before:
        return failed(f"{count_after} open positions would exceed {limit}", **detail)
    return passed(**detail)


def leverage(gross_after: Decimal, gross_before: Decimal, equity: Decimal, limit: float) -> Check:
    if equity <= 0:
        return failed(f"equity is {_f(equity)}: no leverage is possible", equity=_f(equity))
    after, before = gross_after / equity, gross_before / equity
    detail = {"before": _f(before, 6), "after": _f(after, 6), "limit": limit, "equity": _f(equity)}
    if after > exact(limit) and after > before:
        return failed(f"gross leverage {_f(after, 6):g} would exceed {limit:g}", **detail)
    return passed(**detail)


# --------------------------------------------------------------------------- losses


def loss_floor(reference: Decimal, limit: float) -> Decimal:
    """The equity below which a loss of more than ``limit`` (a share) of ``reference`` is a breach (exact)."""
    return reference - reference * exact(limit)


def daily_loss(day_start_equity: Decimal, equity: Decimal, limit: float) -> Check:
    """The fall of equity since the day started, as a share of the day's starting equity (past the limit: equity
    below start × (1 - limit), compared exactly)."""
    loss = (day_start_equity - equity) / day_start_equity if day_start_equity > 0 else Decimal(1)
    detail = {"loss": _f(loss, 6), "limit": limit, "day_start_equity": _f(day_start_equity), "equity": _f(equity)}
    if equity < loss_floor(day_start_equity, limit):
        return failed(f"daily loss {_f(loss * 100, 3):g}% is past the {limit * 100:g}% limit", **detail)
    return passed(**detail)


def drawdown(peak: Decimal, equity: Decimal, limit: float) -> Check:
    """The fall of equity from its peak, as a share of the peak (past the limit: below peak × (1 - limit))."""
    dd = (peak - equity) / peak if peak > 0 else Decimal(1)
    detail = {"drawdown": _f(dd, 6), "limit": limit, "peak": _f(peak), "equity": _f(equity)}
    if equity < loss_floor(peak, limit):
        return failed(f"drawdown {_f(dd * 100, 3):g}% is past the {limit * 100:g}% limit", **detail)
    return passed(**detail)
