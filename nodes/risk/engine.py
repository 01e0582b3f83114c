"""The risk decision: one verdict per raw signal, with every check's result.

A signal says which side to be on (buy, sell, flat); the engine turns it into one order against
its view of the account (filled positions plus pending approvals): ``flat`` closes what is
held, ``buy`` while short closes the short and opens a long (one order, netting), ``buy`` while
long adds only with ``pyramiding``. The order has a closing part and an opening part:

- the whole order needs: reconciled state, a fresh signal (TTL), room under the rate throttle,
  a trading state that is not halted, something to do;
- the opening part also needs: prices (the symbol's and the conversions), a known equity, a
  spread within the limit, no high-impact release of the pair's currencies near, the minimum
  confidence, a size (ATR stop, risk share of equity, at least the minimum lot), and room
  under every exposure limit, the daily loss and the drawdown. In ``reducing`` it is refused.

When only the opening part fails, the closing part is still approved (the reasons say what was
trimmed); when nothing is left, the signal is rejected. Every check's record is kept either way.

**Event time.** A signal is judged as of its own ``ts``: the prices and conversion rates of that
instant (the last quote of each symbol at or before it, from the last ``quote_history``), its
throttle window, its pending approvals, and it is stamped with it. Live delivery is asynchronous
(ticks after the signal may reach the gate before it does, and by how much varies), so a decision
that read the newest prices would differ from the same signal's on a replay. Only the stale check
compares the signal with the clock: a signal that reached the gate too late is refused, and so is
one stamped too far ahead; the time of a refused signal moves nothing (it forgets no decided ids,
expires no approval, empties no throttle window). Marks (daily loss, drawdown) move with the newest
event time seen. Deterministic: nothing is random or unordered.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from framework.durations import parse_ms
from framework.timeframes import DAY_MS
from framework.topology.model import Account
from nodes.risk import rules as R
from nodes.risk.atr import WilderATR
from nodes.risk.book import STATUSES, Book, Quote
from nodes.risk.calendar import Blackout
from nodes.risk.exposure import currency_exposure, gross_notional, notional, open_count
from nodes.risk.params import RiskParams
from nodes.risk.sizing import Size, fixed_size, risk_size, stop_distance
from nodes.risk.state import COMMANDS, DAILY_LOSS, DRAWDOWN, OPERATOR, StateOfRecord, TradingState, breach, new_day
from nodes.trading.instruments import Rules, VolumeError, dec
from nodes.trading.money import MissingRate, Rates

ZERO = Decimal(0)
SIDES = ("buy", "sell", "flat")
ALERT_TYPES = ("trading_state", "drawdown", "daily_loss", "stale_data", "limit_exceeded", "exposure", "reconciliation")
"""The ``type`` values of ``risk.alert.{type}`` this engine raises."""
OPENING_CHECKS = ("prices", "spread", "calendar", "confidence", "sizing", "symbol_exposure", "currency_exposure",
                  "open_positions", "leverage", "daily_loss", "drawdown")  # fmt: skip
"""Checks of the opening part; recorded as skipped (with why) when nothing opens."""
_REJECTION_ALERTS = {"prices": "stale_data", "throttle": "limit_exceeded", "symbol_exposure": "exposure",
                     "currency_exposure": "exposure", "open_positions": "exposure", "leverage": "exposure"}  # fmt: skip


class BadSignal(ValueError):
    """A signal the gate cannot judge (unknown symbol, bad side...): dead-lettered, not decided."""


def decision_id(signal_id: str) -> str:
    """One decision per signal: its id follows from the signal's."""
    return "rd-" + hashlib.sha256(signal_id.encode()).hexdigest()[:24]


@dataclass(slots=True)
class Outcome:
    decision: dict[str, Any]
    """risk_decision.v1, approved or rejected."""
    approved: dict[str, Any] | None
    """approved_signal.v1, when approved."""
    alerts: list[dict[str, Any]] = field(default_factory=list)


class RiskEngine:
    def __init__(self, params: RiskParams, rules: Mapping[str, Rules], account: Account, service: str = "risk-management") -> None:
        self.p = params
        self.rules = dict(rules)
        self.currency = account.currency
        self.service = service
        self.book = Book(self.rules, self.currency, dec(account.balance))
        self.rates = Rates((s, r.base, r.quote) for s, r in self.rules.items())
        self.quotes: dict[str, Quote] = {}
        self.recent: dict[str, deque[Quote]] = {}
        """symbol → its quotes of the last ``quote_history`` (and the one before), oldest first: a signal's prices."""
        self._newest_quote: int | None = None
        """The time of the newest quote taken (never lowered): a signal at or after it is judged on the latest prices."""
        self.watermark: int | None = None
        """The newest event time seen (quotes, bars, order events, fills): the time of marks."""
        self._restored_watermark: int | None = None
        """The watermark of the snapshot restored (ticks move :attr:`watermark` on before reconciliation): the broker's
        fills from about then on may have been published while the gate was down."""
        self._finest: int | None = None
        """The length of the shortest bars seen: their closes are prices."""
        self.atr: dict[tuple[str, str], WilderATR] = {}
        self.calendar = Blackout(params.calendar_impacts, _ms(params.calendar_before), _ms(params.calendar_after))
        self.throttle = R.Throttle(params.throttle_orders, _ms(params.throttle_window))
        self.state = StateOfRecord()
        self.seen: OrderedDict[str, int] = OrderedDict()
        """signal_id → its time, at most the clock plus ``max_clock_skew`` (a refused signal stamped further ahead must not
        hold back the pruning of every id after it). Insertion order is time order: pruned from the front; an
        OrderedDict because a dict pruned from the front makes ``next(iter(...))`` walk every removed entry: O(window)
        per signal over a long run."""
        self.reconciled = params.reconcile == "none"
        self.reconcile_problem: str | None = None if self.reconciled else "waiting for the broker's state"
        self.last_reconcile_ask: int | None = None
        self.peak: Decimal | None = None
        self.day: int | None = None
        self.day_start_equity: Decimal | None = None
        self.restart_marks = False
        """An operator resumed while the equity was unknown: the peak and the day's start restart from the first mark
        that knows it (else that mark would breach against the loss the resume acknowledged)."""
        self._marked: Decimal | None = None
        """The equity of the last mark: an unchanged one on the same day has nothing new to say."""
        self._marked_at: int | None = None
        """The event time of the last mark, while nothing it reads has changed since (None: something may have). A mark
        at that time again would find the same equity on the same day, or again no reconciliation or no rate: it has
        nothing to do, and is not computed (a decision marks as of the same time as the bar or quote before it). Each
        method that can change what marking reads (prices, the book, reconciliation, the marks) clears it first."""
        self.last_alert: dict[tuple[str, str], int] = {}
        self.alert_seq = 0
        self.applied_commands: dict[str, int] = {}
        """command_id → when applied: a command delivered twice (mailbox and bus, a redelivery) is applied once."""
        self.ms = {name: _ms(getattr(params, name)) for name in (
            "max_quote_age", "default_ttl", "max_clock_skew", "dedup_window", "pending_timeout", "reconcile_retry", "reconcile_timeout",
            "alert_cooldown", "quote_history")}  # fmt: skip
        self.day_offset = params.day_start_ms()

    # ------------------------------------------------------------------ inputs

    def validate(self, signal: Mapping[str, Any]) -> None:
        """Raise :class:`BadSignal` with the reason when ``signal`` cannot be judged."""
        if not isinstance(signal, Mapping):
            raise BadSignal(f"a signal must be an object, not {type(signal).__name__}")
        sid = signal.get("signal_id")
        if not isinstance(sid, str) or not sid:
            raise BadSignal(f"signal_id {sid!r} is missing or empty")
        symbol = signal.get("symbol")
        if symbol not in self.rules:
            raise BadSignal(f"unknown symbol {symbol!r}: not an instrument of this topology")
        if signal.get("side") not in SIDES:
            raise BadSignal(f"side {signal.get('side')!r} is not one of {', '.join(SIDES)}")
        ts = signal.get("ts")
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
            raise BadSignal(f"ts {ts!r} is not a time in epoch milliseconds")
        conf = signal.get("confidence")
        if not isinstance(conf, (int, float)) or isinstance(conf, bool) or not 0 <= conf <= 1:
            raise BadSignal(f"confidence {conf!r} is not a number from 0 to 1")
        ttl = signal.get("ttl_ms")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1):
            raise BadSignal(f"ttl_ms {ttl!r} is not a positive integer")
        if not isinstance(signal.get("timeframe"), str):
            raise BadSignal(f"timeframe {signal.get('timeframe')!r} is missing")

    def _seen(self, ts: int) -> int:
        """Move the event time on to ``ts`` (never back); returns it."""
        if self.watermark is None or ts > self.watermark:
            self.watermark = ts
        return self.watermark

    def on_quote(self, symbol: str, bid: Any, ask: Any, ts: int, now: int | None = None, source: str = "tick") -> list[dict[str, Any]]:
        """A price (``now`` is not used: marks follow event time)."""
        if symbol not in self.rules:
            return []
        current = self.quotes.get(symbol)
        if current is not None and ts < current.ts:
            return []
        self._marked_at = None
        b = dec(bid)
        a = dec(ask) if ask is not None else None
        quote = self.quotes[symbol] = Quote(b, a, ts, source)
        if self._newest_quote is None or ts > self._newest_quote:
            self._newest_quote = ts
        self.rates.update(symbol, b, a)
        recent = self.recent.get(symbol)
        if recent is None:
            recent = self.recent[symbol] = deque()
        recent.append(quote)
        cutoff = ts - self.ms["quote_history"]
        while len(recent) > 1 and recent[1].ts <= cutoff:
            recent.popleft()
        return self.mark(self._seen(ts))

    def prices_at(self, at: int) -> tuple[dict[str, Quote], Rates]:
        """The quotes and conversion rates as of event time ``at``: each symbol's last quote at or before it."""
        if self._newest_quote is None or self._newest_quote <= at or all(q.ts <= at for q in self.quotes.values()):
            return self.quotes, self.rates
        quotes: dict[str, Quote] = {}
        rates = Rates((s, r.base, r.quote) for s, r in self.rules.items())
        for symbol, latest in self.quotes.items():
            quote: Quote | None = latest
            if latest.ts > at:
                recent = self.recent.get(symbol) or ()
                index = bisect.bisect_right(recent, at, key=_quote_ts)
                quote = recent[index - 1] if index else None
            if quote is not None:
                quotes[symbol] = quote
                rates.update(symbol, quote.bid, quote.ask)
        return quotes, rates

    def on_bar(self, bar: Mapping[str, Any], now: int) -> list[dict[str, Any]]:
        """ATR per symbol and timeframe from complete first publications; the close of a bar of the finest timeframe
        seen is a price when no fresher tick is. (A coarser bar's close is a finer one's, and a coarse bucket closed
        early, at the end of a bounded input, would date its price at its end: in the future.)"""
        symbol, timeframe = bar["symbol"], bar["timeframe"]
        if symbol not in self.rules or bar.get("complete") is False:
            return []
        if not bar.get("revision"):
            atr = self.atr.get((symbol, timeframe))
            if atr is None:
                atr = self.atr[(symbol, timeframe)] = WilderATR(self.p.atr_period)
            atr.update(float(bar["high"]), float(bar["low"]), float(bar["close"]), int(bar["ts"]))
        length = int(bar["ts_close"]) - int(bar["ts"])
        if self._finest is None or length < self._finest:
            self._finest = length
        elif length > self._finest:
            return []
        spread = bar.get("spread_mean")
        close = dec(bar["close"])
        return self.on_quote(symbol, close, None if spread is None else close + dec(spread), int(bar["ts_close"]), now, "bar")

    def on_order_event(self, event: Mapping[str, Any], now: int) -> list[dict[str, Any]]:
        """Raises ValueError for an event that cannot be applied (unknown symbol or status)."""
        if event.get("symbol") not in self.rules:
            raise ValueError(f"order event for unknown symbol {event.get('symbol')!r}")
        if event.get("status") not in STATUSES or event.get("side") not in ("buy", "sell"):
            raise ValueError(f"order event with status {event.get('status')!r} and side {event.get('side')!r}")
        quote = self.quotes.get(event["symbol"])
        self._marked_at = None
        self.book.on_order_event(event, self.rates, self.rates.mid(event["symbol"]) if quote else None)
        return self.mark(self._seen(int(event["ts"])))

    def on_fill(self, fill: Mapping[str, Any], now: int) -> list[dict[str, Any]]:
        """Raises ValueError for a fill that cannot be applied (unknown symbol, no quantity or price)."""
        self._marked_at = None
        if self.book.on_fill(fill, self.rates) is None:
            return []
        return self.mark(self._seen(int(fill["ts"])))

    def warm_up(self, bars: list[Mapping[str, Any]]) -> int:
        """ATRs from past bars (sorted by symbol, timeframe, time), for the series no snapshot brought; returns how many."""
        fresh: set[tuple[str, str]] = set()
        for bar in bars:
            key = (bar["symbol"], bar["timeframe"])
            if key[0] not in self.rules or (key in self.atr and key not in fresh):
                continue
            if key not in fresh:
                fresh.add(key)
                self.atr[key] = WilderATR(self.p.atr_period)
            self.atr[key].update(float(bar["high"]), float(bar["low"]), float(bar["close"]), int(bar["ts"]))
        return len(fresh)

    def on_calendar(self, event: Mapping[str, Any], now: int) -> bool:
        kept = self.calendar.add(event)
        if kept:
            self.calendar.prune(now)
        return kept

    # ------------------------------------------------------------------ reconciliation

    def reconcile_due(self, now: int) -> bool:
        return not self.reconciled and (self.last_reconcile_ask is None or now - self.last_reconcile_ask >= self.ms["reconcile_retry"])

    def reconcile_query(self, now: int) -> dict[str, Any]:
        """The broker_query.v1 to send: the state, with the fills since the oldest pending approval and since the newest
        fill or order event the gate counted or the snapshot's event time (less ``pending_timeout``, for fills that
        arrive out of order). A fill the broker reports is known to be in its state, so its redelivery is a duplicate;
        one published while the gate was down must be among them, however long ago (not only within the last
        ``pending_timeout``). A gate with no snapshot and nothing counted yet asks for the fills of its ``dedup_window``:
        its state was lost, not its durable consumer's place in the stream."""
        self.last_reconcile_ask = now
        known = [t for t in (self.book.last_event(), self._restored_watermark) if t is not None]
        if not known:  # no memory at all (no snapshot): a durable consumer that outlived it may deliver any recent fill
            known.append(now - self.ms["dedup_window"])
        since = min([now, *(p.ts for p in self.book.pending.values()), *known]) - self.ms["pending_timeout"]
        return {"query": "state", "ts": now, "since_ms": max(since, 0)}

    def on_broker_state(self, state: Mapping[str, Any], now: int) -> list[dict[str, Any]]:
        self._marked_at = None
        missing = [k for k in ("account", "positions", "orders", "fills") if not isinstance(state, Mapping) or k not in state]
        if missing:
            keys = ", ".join(sorted(state)) if isinstance(state, Mapping) else type(state).__name__
            return self.reconcile_failed(f"the reply is no broker state (it lacks {', '.join(missing)}; it has: {keys})", now)
        account = state.get("account") or {}
        if account.get("currency") != self.currency:
            return self.reconcile_failed(f"the broker's account is in {account.get('currency')!r}, the topology's in {self.currency}", now)
        if state.get("connected") is False:
            return self.reconcile_failed("the broker connector is not connected to the broker (its state is its last known view)", now)
        problems = self.book.reconcile(state, now)
        self.reconciled, self.reconcile_problem = True, None
        alerts = [self.alert("reconciliation", "warning", p, now) for p in problems]
        alerts.append(self.alert("reconciliation", "info", f"reconciled with the broker: balance {self.book.balance()} {self.currency}, "
                                 f"{open_count(self.book.nets())} open or pending positions", now))  # fmt: skip
        return [a for a in alerts if a] + self.mark(self.watermark if self.watermark is not None else now)

    def reconcile_failed(self, reason: str, now: int) -> list[dict[str, Any]]:
        self.reconcile_problem = reason
        alert = self.alert("reconciliation", "critical", f"not reconciled, nothing opens: {reason}", now, cooldown=True)
        return [alert] if alert else []

    # ------------------------------------------------------------------ marking

    def equity(self, quotes: Mapping[str, Quote] | None = None, rates: Rates | None = None) -> Decimal:
        """Marked to the latest prices, or to ``quotes`` and ``rates`` (:meth:`prices_at`)."""
        return self.book.equity(self.quotes if quotes is None else quotes, self.rates if rates is None else rates)

    def mark(self, now: int) -> list[dict[str, Any]]:
        """Mark to market: the day's start, the peak, and the breaches they give (nothing to do again at the time of the
        last mark while nothing changed since: :attr:`_marked_at`)."""
        if now == self._marked_at:
            return []
        self._marked_at = None
        alerts = self._mark(now)
        self._marked_at = now
        return alerts

    def _mark(self, now: int) -> list[dict[str, Any]]:
        if not self.reconciled:
            return []
        try:
            equity = self.equity()
        except MissingRate:
            return []
        alerts: list[dict[str, Any]] = []
        if self.restart_marks:
            self.restart_marks = False
            self.peak = self.day_start_equity = equity
        day = (now - self.day_offset) // DAY_MS
        if day == self.day and equity == self._marked:
            return alerts  # nothing moved since the last mark (most quotes, when nothing is open)
        self._marked = equity
        if day != self.day:
            self.day, self.day_start_equity = day, equity
            self.book.prune(now, self.ms["dedup_window"])
            if self.state.set_by == DAILY_LOSS and self.state.state is not TradingState.ACTIVE:
                alerts += self.set_state(new_day(self.state, "a new trading day", now), now)
        if self.peak is None or equity > self.peak:
            self.peak = equity
        assert self.day_start_equity is not None
        if equity < self.day_start_equity and equity < R.loss_floor(self.day_start_equity, self.p.max_daily_loss):
            daily = R.daily_loss(self.day_start_equity, equity, self.p.max_daily_loss)
            alerts += self._breach(DAILY_LOSS, TradingState(self.p.on_daily_loss), daily, equity, now)
        if equity < self.peak and equity < R.loss_floor(self.peak, self.p.max_drawdown):
            dd = R.drawdown(self.peak, equity, self.p.max_drawdown)
            alerts += self._breach(DRAWDOWN, TradingState(self.p.on_drawdown), dd, equity, now)
        return alerts

    def _breach(self, rule: str, target: TradingState, check: R.Check, equity: Decimal, now: int) -> list[dict[str, Any]]:
        new = breach(self.state, target, rule, check.reason or rule, now)
        if new is None:
            return []
        value = check.detail["loss" if rule == DAILY_LOSS else "drawdown"]
        if new.state is self.state.state:
            self.state = new
            held = "" if target is new.state else f", then {target.value}"
            message = f"{check.reason}: trading stays {new.state.value}{held} until fxrun risk resume"
            alert = self.alert(rule, "critical", message, now, value=value, threshold=check.detail["limit"])
            return [alert] if alert else []
        alert = self.alert(rule, "critical", f"{check.reason}: trading is now {target.value}", now, value=value, threshold=check.detail["limit"])
        return [a for a in (alert,) if a] + self.set_state(new, now)

    def set_state(self, new: StateOfRecord, now: int) -> list[dict[str, Any]]:
        old, self.state = self.state, new
        severity = {TradingState.ACTIVE: "info", TradingState.REDUCING: "warning", TradingState.HALTED: "critical"}[new.state]
        alert = self.alert("trading_state", severity, f"trading {old.state.value} → {new.state.value} (by {new.set_by}: {new.reason})", now)
        return [alert] if alert else []

    def control(self, command: str, reason: str | None, now: int, command_id: str | None = None,
                source: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
        """``halt``, ``reduce``, ``resume`` (set the state) or ``status``; returns the status and the alerts.

        A resume also restarts the drawdown and the daily loss from the equity of now: the
        operator has seen the loss, and a state that breached again at once could never resume.
        Before the equity is known (not reconciled yet, a price missing), from the first mark
        that knows it (:attr:`restart_marks`, kept in the snapshot)."""
        alerts: list[dict[str, Any]] = []
        self._marked_at = None
        if command in COMMANDS and command_id is not None and command_id in self.applied_commands:
            return self.status(now), alerts
        if command in COMMANDS:
            if command_id is not None:
                self.applied_commands[command_id] = now
                while len(self.applied_commands) > 1000:
                    del self.applied_commands[next(iter(self.applied_commands))]
            who = f"{OPERATOR} ({source})" if source else OPERATOR
            text = reason or f"fxrun risk {command}"
            alerts = self.set_state(StateOfRecord(COMMANDS[command], OPERATOR, f"{text} [{who}]", now, command_id), now)
            if command == "resume":
                try:
                    equity = self.equity()
                except MissingRate:
                    equity = None
                if equity is None or not self.reconciled:
                    self.restart_marks = True
                else:
                    self.restart_marks = False
                    self.peak = self.day_start_equity = equity
                    self._marked = None
        elif command != "status":
            raise ValueError(f"unknown risk command {command!r} (halt, reduce, resume, status)")
        return self.status(now), alerts

    def status(self, now: int) -> dict[str, Any]:
        try:
            equity: float | None = float(self.equity()) if self.reconciled else None
        except MissingRate:
            equity = None
        return {
            "service": self.service,
            "ts": now,
            **self.state.to_json(),
            "reconciled": self.reconciled,
            "reconcile_problem": self.reconcile_problem,
            "balance": float(self.book.balance()),
            "equity": equity,
            "peak": None if self.peak is None else float(self.peak),
            "day_start_equity": None if self.day_start_equity is None else float(self.day_start_equity),
            "positions": {s: float(q) for s, q in self.book.nets().items()},
            "pending": len(self.book.pending),
        }

    # ------------------------------------------------------------------ the decision

    def seen_before(self, signal_id: str) -> bool:
        return signal_id in self.seen

    def decide(self, signal: Mapping[str, Any], now: int) -> Outcome | None:
        """The verdict on ``signal`` (validated with :meth:`validate`) as of its ``ts``; None for a signal decided
        before. ``now`` (the clock) only says whether the signal came too late."""
        sid = signal["signal_id"]
        if sid in self.seen:
            return None
        at = int(signal["ts"])
        ttl = signal.get("ttl_ms") or self.ms["default_ttl"]
        timely = R.stale(at, ttl, now, self.ms["max_clock_skew"])
        alerts = self._move_to(at) if timely.ok else []
        self.seen[sid] = min(at, now + self.ms["max_clock_skew"])
        if self.watermark is not None or timely.ok:
            alerts += self.mark(self.watermark if self.watermark is not None else at)
        quotes, rates = self.prices_at(at)
        symbol, side = signal["symbol"], signal["side"]
        rules = self.rules[symbol]
        checks: dict[str, R.Check] = {}
        reasons: list[str] = []

        # the whole order
        checks["reconciled"] = R.passed() if self.reconciled else R.failed(f"not reconciled: {self.reconcile_problem}")
        checks["stale"] = timely
        checks["throttle"] = self.throttle.check(at)
        net = self.book.net(symbol)
        close, opens = _plan(side, net, self.p.pyramiding)
        position = {"net": float(net), "filled": float(self.book.filled(symbol)), "close": float(close), "open": opens}
        if not self.reconciled:
            checks["position"] = R.skipped("unknown before reconciliation")
        elif not close and not opens:
            held = "flat" if not net else f"{'long' if net > 0 else 'short'} {net.copy_abs().normalize():f} lots"
            checks["position"] = R.failed(f"nothing to do: already {held}" + ("" if side == "flat" or not net else " (pyramiding is off)"), **position)
        else:
            checks["position"] = R.passed(**position)
        checks["trading_state"] = R.trading_state(self.state.state, opens, close > 0)
        whole_ok = all(check.ok is not False for check in checks.values())

        # the opening part
        size: Size | None = None
        stops: tuple[Decimal | None, Decimal | None] = (None, None)
        skipped: str | None = None  # why the whole opening part is skipped, if it is: then only its records are made
        if not opens:
            skipped = "nothing opens"
        elif not whole_ok:
            skipped = "the order is rejected as a whole"
        elif self.state.state is TradingState.REDUCING:
            skipped = "trading is reducing"
            checks["trading_state"] = R.passed(state="reducing", trimmed="the opening part")
            reasons.append("trading is reducing: the opening part was trimmed")
        else:
            opening, size, stops = self._opening(signal, symbol, side, rules, net, close, at, quotes, rates)
            checks.update(opening)
            refused = [c.reason for c in opening.values() if c.ok is False and c.reason]
            if refused:
                size = None
                reasons.extend(refused if not close else [f"opening part refused: {r}" for r in refused])
            for name in OPENING_CHECKS:
                checks.setdefault(name, R.skipped("not evaluated"))

        quantity = close + (size.lots if size is not None else ZERO) if whole_ok else ZERO
        if not whole_ok:
            reasons = [c.reason for c in checks.values() if c.ok is False and c.reason]
        approved = quantity > 0
        did = decision_id(sid)
        records = {name: check.record() for name, check in checks.items()}
        if skipped is not None:
            records.update(R.skipped_records(OPENING_CHECKS, skipped))
        decision: dict[str, Any] = {"decision_id": did, "signal_id": sid, "symbol": symbol, "ts": at,
                                    "decision": "approved" if approved else "rejected", "reasons": reasons,
                                    "checks": records}  # fmt: skip
        for name, check in checks.items():
            if check.ok is False and check.reason and name in _REJECTION_ALERTS:
                alert = self.alert(_REJECTION_ALERTS[name], "warning", f"{symbol}: {check.reason}", at, symbol=symbol, cooldown=True)
                alerts += [alert] if alert else []
        if not approved:
            return Outcome(decision, None, alerts)
        order_side = side if side != "flat" else ("sell" if net > 0 else "buy")
        decision["quantity"] = float(quantity)
        message: dict[str, Any] = {"signal_id": sid, "decision_id": did, "symbol": symbol, "side": order_side,
                                   "quantity": float(quantity), "ts": at, "limits": self._limits(symbol)}  # fmt: skip
        if size is not None:
            quote = quotes[symbol]
            entry = (quote.ask if quote.ask is not None else quote.bid) if order_side == "buy" else quote.bid
            sign = 1 if order_side == "buy" else -1
            sl, tp = stops
            if sl and entry - sign * sl > 0:
                message["stop_loss"] = float(rules.price(entry - sign * sl))
            if tp and entry + sign * tp > 0:
                message["take_profit"] = float(rules.price(entry + sign * tp))
        self.throttle.record(at)
        self.book.approve(did, symbol, order_side, quantity, at, sid)
        return Outcome(decision, message, alerts)

    def _opening(self, signal: Mapping[str, Any], symbol: str, side: str, rules: Rules, net: Decimal, close: Decimal, at: int,
                 quotes: Mapping[str, Quote], rates: Rates) -> tuple[dict[str, R.Check], Size | None, tuple[Decimal | None, Decimal | None]]:  # fmt: skip
        checks: dict[str, R.Check] = {}
        quote = quotes.get(symbol)
        prices = R.quote_age(symbol, quote.ts if quote else None, at, self.ms["max_quote_age"])
        equity: Decimal | None = None
        if prices.ok:
            try:
                rates.rate(rules.quote, self.currency)
                rates.rate(rules.base, self.currency)
                equity = self.equity(quotes, rates)
            except MissingRate as exc:
                prices = R.failed(f"state unknown: {exc}")
        checks["prices"] = prices
        if quote is not None:
            checks["spread"] = R.spread(quote.bid, quote.ask, rules.pip, self.p.symbol_limit(self.p.max_spread_pips, symbol),
                                        self.p.allow_unknown_spread)  # fmt: skip
        else:
            checks["spread"] = R.skipped("no price")
        currencies = (rules.base, rules.quote)
        checks["calendar"] = R.calendar(self.calendar.blocking(currencies, at), currencies)
        checks["confidence"] = R.confidence(float(signal["confidence"]), self.p.min_confidence)
        if equity is None:
            for name in OPENING_CHECKS:
                checks.setdefault(name, R.skipped("no equity without prices"))
            return checks, None, (None, None)
        size, stops, checks["sizing"] = self._size(signal, symbol, rules, equity, rates)
        if size is None:
            for name in OPENING_CHECKS:
                checks.setdefault(name, R.skipped("no size"))
            return checks, None, (None, None)
        signed = (close + size.lots) * (1 if side == "buy" else -1)
        before = self.book.nets()
        after = dict(before)
        after[symbol] = after.get(symbol, ZERO) + signed
        try:
            limit = self.p.symbol_limit(self.p.max_symbol_exposure, symbol)
            checks["symbol_exposure"] = R.symbol_exposure(
                symbol, notional(after[symbol], rules, rates, self.currency), notional(net, rules, rates, self.currency), limit
            )
            checks["currency_exposure"] = R.currency_exposure(
                currency_exposure(before, self.rules, rates, self.currency),
                currency_exposure(after, self.rules, rates, self.currency),
                self.p.max_currency_exposure,
            )
            checks["open_positions"] = R.open_positions(open_count(after), open_count(before), self.p.max_open_positions)
            checks["leverage"] = R.leverage(
                gross_notional(after, self.rules, rates, self.currency), gross_notional(before, self.rules, rates, self.currency),
                equity, self.p.max_leverage,
            )  # fmt: skip
        except MissingRate as exc:
            checks["symbol_exposure"] = R.failed(f"state unknown: {exc}")
        assert self.day_start_equity is not None and self.peak is not None
        checks["daily_loss"] = R.daily_loss(self.day_start_equity, equity, self.p.max_daily_loss)
        checks["drawdown"] = R.drawdown(self.peak, equity, self.p.max_drawdown)
        return checks, size, stops

    def _size(self, signal: Mapping[str, Any], symbol: str, rules: Rules, equity: Decimal,
              rates: Rates) -> tuple[Size | None, tuple[Decimal | None, Decimal | None], R.Check]:  # fmt: skip
        """The size and the (stop-loss, take-profit) distances: ATRs of the signal's timeframe (or ``atr_timeframe``)."""
        timeframe = self.p.atr_timeframe or signal["timeframe"]
        atr = self.atr.get((symbol, timeframe))
        stops: tuple[Decimal | None, Decimal | None] = (None, None)
        detail: dict[str, Any] = {"atr_timeframe": timeframe}
        if atr is not None and atr.value is not None:
            sl = stop_distance(rules, atr.value, self.p.stop_atr) if self.p.stop_atr is not None else None
            tp = stop_distance(rules, atr.value, self.p.take_profit_atr) if self.p.take_profit_atr is not None else None
            floor = rules.pip * dec(self.p.symbol_limit(self.p.min_stop_pips, symbol))
            if sl is not None and sl < floor:
                if tp is not None and self.p.take_profit_atr is not None and self.p.stop_atr is not None:
                    tp = rules.price(floor * dec(self.p.take_profit_atr) / dec(self.p.stop_atr))  # the same reward-to-risk
                sl = floor
                detail["min_stop_applied"] = True
            stops = (sl, tp)
            detail.update(atr=atr.value, stop_distance=None if sl is None else float(sl), take_profit_distance=None if tp is None else float(tp))
        elif self.p.fixed_lots is None:
            have = atr.warming if atr is not None else f"0/{self.p.atr_period} true ranges"
            return None, stops, R.failed(f"no ATR yet for {symbol} {timeframe} ({have})", **detail)
        try:
            if self.p.fixed_lots is not None:
                size = fixed_size(self.p.fixed_lots, rules)
            else:
                assert stops[0] is not None
                size = risk_size(equity, self.p.risk_per_trade, stops[0], rules, rates, self.currency)
        except (VolumeError, MissingRate) as exc:
            return None, stops, R.failed(str(exc), equity=round(float(equity), 2), **detail)
        return size, stops, R.passed(equity=round(float(equity), 2), **detail, **size.record())

    def _limits(self, symbol: str) -> dict[str, float | None]:
        p = self.p
        return {
            "risk_per_trade": p.risk_per_trade, "max_symbol_exposure": p.symbol_limit(p.max_symbol_exposure, symbol),
            "max_currency_exposure": p.max_currency_exposure, "max_open_positions": float(p.max_open_positions),
            "max_leverage": p.max_leverage, "max_daily_loss": p.max_daily_loss, "max_drawdown": p.max_drawdown,
            "max_spread_pips": p.symbol_limit(p.max_spread_pips, symbol),
        }  # fmt: skip

    def _move_to(self, at: int) -> list[dict[str, Any]]:
        """Event time reaches a signal's ``at`` (one that passed the stale check: a time a refused signal carries is not
        trusted to move anything): decided ids older than the dedup window are forgotten, approvals silent for
        ``pending_timeout`` stop counting, approvals leave the throttle window."""
        self._forget_old(at)
        self.throttle.expire(at)
        alerts: list[dict[str, Any]] = []
        for gone in self.book.expire(at, self.ms["pending_timeout"]):
            alert = self.alert("reconciliation", "warning", f"approval {gone.key} ({gone.side} {gone.quantity} {gone.symbol}) "
                               f"saw no order event or fill for {self.p.pending_timeout} and no longer counts", at,
                               symbol=gone.symbol)  # fmt: skip
            alerts += [alert] if alert else []
        return alerts

    def _forget_old(self, now: int) -> None:
        horizon = now - self.ms["dedup_window"]
        seen = self.seen
        while seen:
            first = next(iter(seen))
            if seen[first] >= horizon:
                break
            del seen[first]

    # ------------------------------------------------------------------ alerts

    def alert(self, kind: str, severity: str, message: str, now: int, *, symbol: str | None = None, value: float | None = None,
              threshold: float | None = None, cooldown: bool = False) -> dict[str, Any] | None:  # fmt: skip
        """An alert.v1, or None within the cooldown of the last one of its type and symbol (when ``cooldown``)."""
        key = (kind, symbol or "")
        if cooldown:
            last = self.last_alert.get(key)
            if last is not None and now - last < self.ms["alert_cooldown"]:
                return None
        self.last_alert[key] = now
        self.alert_seq += 1
        out: dict[str, Any] = {"alert_id": f"{self.service}-{kind}-{now}-{self.alert_seq}", "ts": now, "source": self.service,
                               "type": kind, "severity": severity, "message": message}  # fmt: skip
        if symbol is not None:
            out["symbol"] = symbol
        if value is not None:
            out["value"] = value
        if threshold is not None:
            out["threshold"] = threshold
        return out

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """``restart_marks`` only when set: the snapshot of a gate that never needed it stays what it was."""
        snap: dict[str, Any] = {
            "state": self.state.to_json(),
            "book": self.book.snapshot(),
            "atr": {f"{s}/{tf}": a.snapshot() for (s, tf), a in sorted(self.atr.items())},
            "calendar": self.calendar.snapshot(),
            "throttle": list(self.throttle.times),
            "seen": self.seen,
            "peak": None if self.peak is None else str(self.peak),
            "day": self.day,
            "day_start_equity": None if self.day_start_equity is None else str(self.day_start_equity),
            "alert_seq": self.alert_seq,
            "applied_commands": self.applied_commands,
            "watermark": self.watermark,
        }
        if self.restart_marks:
            snap["restart_marks"] = True
        return snap

    def restore(self, data: Mapping[str, Any]) -> None:
        self._marked_at = None
        self.state = StateOfRecord.from_json(data["state"])
        self.book.restore(data["book"])
        self.atr = {}
        for key, value in data["atr"].items():
            symbol, _, timeframe = key.partition("/")
            self.atr[(symbol, timeframe)] = WilderATR.from_snapshot(value)
        self.calendar.restore(data["calendar"])
        self.throttle.times.extend(int(t) for t in data["throttle"])
        self.seen = OrderedDict((k, int(v)) for k, v in data["seen"].items())
        self.peak = None if data["peak"] is None else Decimal(data["peak"])
        self.day = data["day"]
        self.day_start_equity = None if data["day_start_equity"] is None else Decimal(data["day_start_equity"])
        self.alert_seq = int(data.get("alert_seq", 0))
        self.applied_commands = {k: int(v) for k, v in data.get("applied_commands", {}).items()}
        self.watermark = self._restored_watermark = data.get("watermark")
        self.restart_marks = bool(data.get("restart_marks", False))


def _quote_ts(quote: Quote) -> int:
    return quote.ts


def _plan(side: str, net: Decimal, pyramiding: bool) -> tuple[Decimal, bool]:
    """(lots that close, whether a position opens) for a signal on ``side`` against the net position."""
    if side == "flat":
        return abs(net), False
    long = side == "buy"
    against = net < 0 if long else net > 0
    if against:
        return abs(net), True
    return ZERO, not net or pyramiding


def _ms(text: str) -> int:
    value = parse_ms(text)
    if value is None:
        raise ValueError(f"{text!r}: a limit cannot be forever")
    return value
