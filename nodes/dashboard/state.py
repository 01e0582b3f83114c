"""What the dashboard knows of the run, from the messages it receives, and what it pushes to pages.

Every message becomes zero or more *updates*: small JSON-able dicts with a type ``t``, each with
a conflation key (a quote, a candle, a run's progress: only the newest matters to a page that
is behind) or none (an alert, a signal: each one counts). Payloads are cleaned first: strings
cut, secrets-looking keys masked, credentials in URLs masked, non-finite numbers nulled, deep
or wide structures trimmed; an event still too large becomes a one-line notice. A malformed
message never raises: it becomes a notice too.
"""

from __future__ import annotations

import math
import re
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

Update = tuple[str | None, dict[str, Any]]
"""(conflation key or None, update)."""

SECRET_KEY = re.compile(r"passw|secret|token|api_?key|credential|private_?key|authorization", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"([a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@", re.IGNORECASE)
MAX_ITEMS = 64
MAX_DEPTH = 4
OPEN_STATUSES = frozenset({"pending", "submitted", "accepted", "partially_filled"})
SIGNAL_STAGES = frozenset({"raw", "approved", "rejected"})
ALERT_LEVELS = ("info", "warning", "critical")
CLOCK_DOMAINS = frozenset({"ticks", "bars"})
"""The market's time comes from quotes and candles (a calendar announces the future, FRED reports the past)."""


def clean(value: Any, limit: int, depth: int = 0) -> Any:
    """``value`` made safe and small for a page (see the module docstring)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = URL_CREDENTIALS.sub(r"\1:***@", value) if "@" in value else value
        return text if len(text) <= limit else text[:limit] + "…"
    if isinstance(value, Mapping):
        if depth >= MAX_DEPTH:
            return "…"
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= MAX_ITEMS:
                out["…"] = f"{len(value) - MAX_ITEMS} more"
                break
            key = clean(str(k), limit)
            out[key] = "***" if SECRET_KEY.search(key) else clean(v, limit, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            return "…"
        items = [clean(v, limit, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"… {len(value) - MAX_ITEMS} more")
        return items
    return clean(str(value), limit, depth)


def num(value: Any) -> float | None:
    """A finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


MAX_TS = 2**53
"""Milliseconds beyond this are no time (year 285,000); the page's numbers are doubles."""


def ts_of(value: Any) -> int | None:
    """A timestamp in ms, or None for anything that is not one (a bool, NaN, infinities, out of range)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and -MAX_TS <= value <= MAX_TS:
        return int(value)
    return None


class DashboardState:
    """The latest picture: quotes, recent candles, signals, orders, fills, alerts, external
    events, training and backtest runs, message counts per stream; bounded everywhere."""

    def __init__(self, *, keep: int = 200, bars: int = 500, max_string: int = 300, max_message_bytes: int = 16_384) -> None:
        self.keep = keep
        self.bar_limit = bars
        self.max_string = max_string
        self.max_message_bytes = max_message_bytes
        self.ticks: dict[str, dict[str, Any]] = {}
        self.bars: dict[tuple[str, str], OrderedDict[int, dict[str, Any]]] = {}
        self.signals: deque[dict[str, Any]] = deque(maxlen=keep)
        self.orders: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.fills: deque[dict[str, Any]] = deque(maxlen=keep)
        self.alerts: deque[dict[str, Any]] = deque(maxlen=keep)
        self.external: deque[dict[str, Any]] = deque(maxlen=keep)
        self.indicators: dict[str, dict[str, Any]] = {}
        self.runs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self.event_ts: int | None = None
        self.notices = 0

    # --- messages in ------------------------------------------------------------------

    def apply(self, subject: str, message: Any) -> list[Update]:
        """The updates one message makes (never raises)."""
        domain = _domain(subject)
        self.counts[domain] += 1
        if not isinstance(message, Mapping):
            return [self._notice(subject, f"a message that is not an object ({type(message).__name__})")]
        try:
            size = len(orjson.dumps(message, default=str))
        except (TypeError, ValueError):
            size = self.max_message_bytes + 1
        if size > self.max_message_bytes and domain != "features":
            return [self._notice(subject, f"an event of {size} bytes (over {self.max_message_bytes}) is not shown")]
        try:
            handler = _HANDLERS.get(domain)
            if handler is None:
                return []
            updates = handler(self, subject, message)
        except Exception as exc:  # a malformed event must not break the page (nor the node)
            return [self._notice(subject, f"an event that could not be read ({type(exc).__name__})")]
        if domain in CLOCK_DOMAINS:
            ts = ts_of(message.get("ts"))
            if ts is not None and (self.event_ts is None or ts > self.event_ts):
                self.event_ts = ts
        return updates

    def _notice(self, subject: str, text: str) -> Update:
        self.notices += 1
        alert = {"ts": self.event_ts, "level": "warning", "source": "dashboard", "type": "notice",
                 "message": f"{subject[:120]}: {text}", "symbol": None}  # fmt: skip
        self.alerts.append(alert)
        return None, {"t": "alert", **alert}

    def _clean(self, message: Mapping[str, Any]) -> dict[str, Any]:
        return clean(message, self.max_string)

    def _tick(self, subject: str, m: Mapping[str, Any]) -> list[Update]:
        symbol = clean(str(m["symbol"]), 32)
        tick = {"symbol": symbol, "bid": num(m.get("bid")), "ask": num(m.get("ask")), "ts": ts_of(m.get("ts"))}
        self.ticks[symbol] = tick
        return [(f"tick:{symbol}", {"t": "tick", **tick})]

    def _bar(self, subject: str, m: Mapping[str, Any]) -> list[Update]:
        symbol, timeframe, ts = clean(str(m["symbol"]), 32), clean(str(m["timeframe"]), 8), ts_of(m["ts"])
        if ts is None:
            raise ValueError("bar without a time")
        bar = {"symbol": symbol, "timeframe": timeframe, "ts": ts,
               **{k: num(m.get(k)) for k in ("open", "high", "low", "close", "volume")}, "complete": m.get("complete") is not False}  # fmt: skip
        series = self.bars.setdefault((symbol, timeframe), OrderedDict())
        series[ts] = bar
        series.move_to_end(ts)
        while len(series) > self.bar_limit:
            series.popitem(last=False)
        return [(f"bar:{symbol}:{timeframe}:{ts}", {"t": "bar", **bar})]

    def _features(self, subject: str, m: Mapping[str, Any]) -> list[Update]:
        return []

    def _signal(self, subject: str, m: Mapping[str, Any]) -> list[Update]:
        parts = subject.split(".")
        stage = parts[1] if len(parts) > 2 and parts[1] in SIGNAL_STAGES else "raw"
        c = self._clean(m)
        signal = {
            "stage": stage, "ts": ts_of(c.get("ts")), "symbol": c.get("symbol"), "timeframe": c.get("timeframe"),
            "side": c.get("side"), "confidence": num(c.get("confidence")), "model_id": c.get("model_id"),
            "signal_id": c.get("signal_id"), "quantity": num(c.get("quantity")), "price": num(c.get("price")),
            "reasons": c.get("reasons") if isinstance(c.get("reasons"), list) else None,
        }  # fmt: skip
        self.signals.append(signal)
        return [(None, {"t": "signal", **signal})]

    def _order(self, subject: str, m: Mapping[str, Any]) -> list[Update]:
        c = self._clean(m)
        order_id = str(c.get("order_id") or c.get("client_order_id") or "")
        if not order_id:
            raise ValueError("order event without an id")
        order = {
            "order_id": order_id, "symbol": c.get("symbol"), "side": c.get("side"), "status": c.get("status"),
            "order_type": c.get("order_type"), "quantity": num(c.get("quantity")), "filled_quantity": num(c.get("filled_quantity")),
            "avg_price": num(c.get("avg_price")), "stop_loss": num(c.get("stop_loss")), "take_profit": num(c.get("take_profit")),
            "ts": ts_of(c.get("ts")), "reason": c.get("reason"), "signal_id": c.get("signal_id"),
        }  # fmt: skip
        self.orders[order_id] = order
        self.orders.move_to_end(order_id)
        if len(self.orders) > self.keep:  # closed orders go first; open ones stay as long as they are open
            for oid in [o for o, v in self.orders.items() if v["status"] not in OPEN_STATUSES][: len(self.orders) - self.keep]:
                del self.orders[oid]
        return [(f"order:{order_id}", {"t": "order", **order})]

    def _broker(self, subject: str, m: Mapping[str, Any]) -> list[Update]:
        c = self._clean(m)
        if subject.startswith("broker.fill."):
            fill = {k: c.get(k) for k in ("fill_id", "order_id", "symbol", "side")}
            fill.update(ts=ts_of(c.get("ts")), quantity=num(c.get("quantity")), price=num(c.get("price")), commission=num(c.get("commission")))
            self.fills.append(fill)
            return [(None, {"t": "fill", **fill})]
        if subject.startswith("broker.error."):
            text = c.get("message") or c.get("reason") or c.get("error") or "broker error"
            code = c.get("retcode", c.get("code"))
            return [self._alert(c, "warning", "broker", "broker_error", f"{text}" + (f" (code {code})" if code is not None else ""))]
        return []

    def _alert_message(self, subject: str, m: Mapping[str, Any]) -> list[Update]:
        c = self._clean(m)
        level = c.get("severity") if c.get("severity") in ALERT_LEVELS else "warning"
        return [self._alert(c, level, c.get("source") or subject.split(".")[0], c.get("type"), c.get("message"))]

    def _gap(self, subject: str, m: Mapping[str, Any]) -> list[Update]:
        c = self._clean(m)
        text = f"data gap {c.get('start_ts')}..{c.get('end_ts')} from {c.get('source')}: {c.get('reason')}"
        return [self._alert({**c, "ts": c.get("end_ts")}, "warning", c.get("source") or "gaps", "data_gap", text)]

    def _dead_letter(self, subject: str, m: Mapping[str, Any]) -> list[Update]:
        c = self._clean(m)
        text = f"dead letter ({c.get('origin')}): {c.get('reason')}"
        return [self._alert(c, "warning", c.get("service") or subject.split(".", 1)[-1], "dead_letter", text)]

    def _notification(self, subject: str, m: Mapping[str, Any]) -> list[Update]:
        """A delivery the notification hub made (sent or failed; suppressed ones are only counted).
        The recipient is not shown."""
        c = self._clean(m)
        status = c.get("status")
        if status not in ("sent", "failed"):
            return []
        text = f"{c.get('kind')} {status}: {c.get('text')}" + (f" ({c.get('reason')})" if c.get("reason") else "")
        return [self._alert(c, "warning" if status == "failed" else "info", c.get("channel") or "notifications", "notification", text)]

    def _alert(self, c: Mapping[str, Any], level: str, source: Any, kind: Any, text: Any) -> Update:
        alert = {"ts": ts_of(c.get("ts")), "level": level, "source": source, "type": kind, "message": text, "symbol": c.get("symbol")}
        self.alerts.append(alert)
        return None, {"t": "alert", **alert}

    def _external(self, subject: str, m: Mapping[str, Any]) -> list[Update]:
        """Calendar events one by one; other series (FRED, commodities) as their latest value each."""
        c = self._clean(m)
        event = {k: c.get(k) for k in ("type", "series", "title", "country", "impact", "unit", "source")}
        event.update({k: num(c.get(k)) for k in ("value", "actual", "forecast", "previous")}, ts=ts_of(c.get("ts")))
        if event["type"] == "economic_calendar":
            self.external.append(event)
            return [(None, {"t": "external", **event})]
        series = str(event.get("series") or "?")
        latest = self.indicators.get(series)
        if latest is not None and (latest.get("ts") or 0) > (event["ts"] or 0):
            return []
        self.indicators[series] = event
        if len(self.indicators) > self.keep:
            self.indicators.pop(next(iter(self.indicators)))
        return [(f"indicator:{series}", {"t": "indicator", **event})]

    def _run(self, subject: str, m: Mapping[str, Any]) -> list[Update]:
        c = self._clean(m)
        kind = "backtest" if subject.startswith("backtest.") else "training"
        run_id = str(c.get("run_id") or subject.split(".")[-1])
        previous = self.runs.get(run_id, {})
        run = {
            "kind": kind, "run_id": run_id, "status": c.get("status"), "ts": ts_of(c.get("ts")),
            "progress": num(c.get("progress")) if c.get("progress") is not None else previous.get("progress"),
            "family": c.get("kind") or previous.get("family"), "model_type": c.get("model_type") or previous.get("model_type"),
            "episode": c.get("episode"),
            "message": c.get("message"), "metrics": c.get("metrics") if isinstance(c.get("metrics"), dict) else previous.get("metrics"),
            "started": previous.get("started") or ts_of(c.get("ts")),
        }  # fmt: skip
        self.runs[run_id] = run
        self.runs.move_to_end(run_id)
        while len(self.runs) > 100:
            self.runs.popitem(last=False)
        return [(f"run:{run_id}", {"t": "run", **run})]

    # --- for a page that connects ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "ticks": list(self.ticks.values()),
            "signals": list(self.signals),
            "orders": list(self.orders.values()),
            "fills": list(self.fills),
            "alerts": list(self.alerts),
            "external": list(self.external),
            "indicators": list(self.indicators.values()),
            "runs": list(self.runs.values()),
            "counts": dict(self.counts),
            "event_ts": self.event_ts,
        }

    def live_bars(self, symbol: str, timeframe: str) -> list[dict[str, Any]]:
        return list(self.bars.get((symbol, timeframe), {}).values())

    def signals_of(self, symbol: str) -> list[dict[str, Any]]:
        return [s for s in self.signals if s["symbol"] == symbol]

    def orders_of(self, symbol: str) -> list[dict[str, Any]]:
        return [o for o in self.orders.values() if o["symbol"] == symbol]


def _domain(subject: str) -> str:
    if subject.startswith("market.external."):
        return "market.external"
    return subject.split(".", 1)[0]


_HANDLERS = {
    "ticks": DashboardState._tick,
    "bars": DashboardState._bar,
    "features": DashboardState._features,
    "signals": DashboardState._signal,
    "orders": DashboardState._order,
    "broker": DashboardState._broker,
    "risk": DashboardState._alert_message,
    "performance": DashboardState._alert_message,
    "gaps": DashboardState._gap,
    "deadletter": DashboardState._dead_letter,
    "notifications": DashboardState._notification,
    "market.external": DashboardState._external,
    "training": DashboardState._run,
    "backtest": DashboardState._run,
}


def merge_bars(history: Iterable[Mapping[str, Any]], live: Iterable[Mapping[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Table candles and live ones by time (a live candle wins: it is the newer revision), the last ``limit``."""
    by_ts: dict[int, dict[str, Any]] = {}
    for bar in history:
        ts = ts_of(bar.get("ts"))
        if ts is not None:
            by_ts[ts] = {"ts": ts, **{k: num(bar.get(k)) for k in ("open", "high", "low", "close", "volume")}}
    for bar in live:
        by_ts[bar["ts"]] = {"ts": bar["ts"], **{k: bar.get(k) for k in ("open", "high", "low", "close", "volume")}}
    return [by_ts[ts] for ts in sorted(by_ts)[-limit:]]
