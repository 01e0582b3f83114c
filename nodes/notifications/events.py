"""What each input means to a person: one :class:`Event` per alert, training outcome, backtest outcome or fill.

The event's ``type`` is what rules and rate limits name (an alert's own type, ``training_completed``,
``training_failed``, ``backtest_completed``, ``backtest_failed``, ``fill``); its ``key`` is what the
dedup window compares (the same condition raised again, not the same message id only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_METRICS_SHOWN = 4
_PREFERRED = ("sharpe", "return", "total_return", "max_drawdown", "balanced_accuracy", "accuracy", "auc", "trades", "win_rate")
"""Metrics a person reads first, in this order; others follow alphabetically."""


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    kind: str
    type: str
    severity: str
    title: str
    text: str
    key: str
    symbol: str | None = None
    source_subject: str | None = None


def _subject(origin: str | None) -> str | None:
    return origin if origin and ":" not in origin and len(origin) <= 128 else None


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _metrics(metrics: Mapping[str, Any] | None) -> str:
    if not metrics:
        return ""
    known = {k: v for k, v in metrics.items() if v is not None}
    order = [k for k in _PREFERRED if k in known] + sorted(k for k in known if k not in _PREFERRED)
    shown = [f"{k} {_number(known[k])}" for k in order[:_METRICS_SHOWN]]
    more = len(known) - len(shown)
    return ", ".join(shown) + (f" (+{more} more)" if more > 0 else "")


def from_alert(msg: Mapping[str, Any], origin: str | None = None) -> Event:
    symbol = msg.get("symbol")
    severity = msg["severity"]
    where = f" {symbol}" if symbol else ""
    return Event(
        id=str(msg["alert_id"]),
        kind="alert",
        type=str(msg["type"]),
        severity=severity,
        title=f"{severity.upper()} {msg['type']}{where}",
        text=f"[{severity.upper()}] {msg['type']}{where}: {msg['message']} ({msg['source']})",
        key=f"alert|{msg['source']}|{msg['type']}|{symbol or ''}|{severity}",
        symbol=symbol,
        source_subject=_subject(origin),
    )


def _run(kind: str, msg: Mapping[str, Any], what: str, detail: Any, origin: str | None) -> Event:
    """A training or backtest run's status as an event (``what``: how the text names the run)."""
    status = msg["status"]
    return Event(
        id=f"{msg['run_id']}:{status}",
        kind=kind,
        type=f"{kind}_{status}",
        severity="warning" if status == "failed" else "info",
        title=f"{kind} {msg['run_id']} {status}",
        text=f"{what} {status}" + (f": {detail}" if detail else ""),
        key=f"{kind}|{msg['run_id']}|{status}",
        source_subject=_subject(origin),
    )


def from_training(msg: Mapping[str, Any], origin: str | None = None) -> Event:
    failed = msg["status"] == "failed"
    model = f" {msg['model_type']}" if msg.get("model_type") else ""
    detail = msg.get("message") if failed else _metrics(msg.get("metrics")) or msg.get("message")
    return _run("training", msg, f"Training {msg['run_id']} ({msg['kind']}{model})", detail, origin)


def from_backtest(msg: Mapping[str, Any], origin: str | None = None) -> Event:
    failed = msg["status"] == "failed"
    detail = msg.get("message") if failed else _metrics(msg.get("metrics"))
    if not failed and msg.get("message"):
        detail = f"{detail} [{msg['message']}]" if detail else msg["message"]
    return _run("backtest", msg, f"Backtest {msg['run_id']}", detail, origin)


def from_fill(msg: Mapping[str, Any], origin: str | None = None) -> Event:
    lots = msg.get("filled_quantity") or msg["quantity"]
    price = f" @ {msg['avg_price']}" if msg.get("avg_price") is not None else ""
    return Event(
        id=f"{msg['order_id']}:{msg['status']}",
        kind="fill",
        type="fill",
        severity="info",
        title=f"{msg['side']} {msg['symbol']} filled",
        text=f"Filled: {msg['side']} {_number(lots)} lots {msg['symbol']}{price} (order {msg['order_id']})",
        key=f"fill|{msg['order_id']}|{msg['status']}",
        symbol=msg["symbol"],
        source_subject=_subject(origin),
    )
