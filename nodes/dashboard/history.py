"""What the dashboard reads from the store's tables: candles, signals and orders of a chart,
positions, the equity curve and the latest performance metrics.

Every read is a bounded query on a table the service declares (``reads``); a table that is
not declared, or a store that fails, gives an empty answer and one log line (the page shows
what the streams bring), never an error page.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from nodes.dashboard.state import clean, num, ts_of
from nodes.trading.metrics import drawdown, drawdown_curve

log = logging.getLogger("fxflow.dashboard")


class History:
    def __init__(self, ctx: Any, *, max_string: int = 300) -> None:
        self.ctx = ctx
        self.max_string = max_string
        self._warned: set[str] = set()

    async def _rows(self, table_name: str, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        try:
            table = self.ctx.table(table_name)
        except KeyError:
            self._warn(table_name, f"table {table_name} is not declared for this service (add it to reads); not shown")
            return []
        final = " FINAL" if getattr(table.store, "kind", "") == "clickhouse" else ""
        try:
            return await table.query(sql.replace("{final}", final), parameters)
        except Exception as exc:  # a store that fails or a table not written yet: the page keeps what it has
            self._warn(table_name, f"reading {table_name} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return []

    def _warn(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s: %s", self.ctx.service, text)

    async def candles(self, symbol: str, timeframe: str, limit: int) -> list[dict[str, Any]]:
        rows = await self._rows(
            "historical_aggregates",
            "SELECT ts, open, high, low, close, volume FROM {table}{final} "
            "WHERE symbol = {symbol:String} AND timeframe = {timeframe:String} ORDER BY ts DESC LIMIT {n:UInt32}",
            {"symbol": symbol, "timeframe": timeframe, "n": limit},
        )
        return rows[::-1]

    async def signals(self, symbol: str, since: int, limit: int) -> list[dict[str, Any]]:
        rows = await self._rows(
            "trading_signals",
            "SELECT ts, symbol, timeframe, side, confidence, model_id, signal_id FROM {table}{final} "
            "WHERE symbol = {symbol:String} AND ts >= {since:Int64} ORDER BY ts DESC LIMIT {n:UInt32}",
            {"symbol": symbol, "since": since, "n": limit},
        )
        return [{**clean(r, self.max_string), "stage": "raw", "ts": ts_of(r.get("ts")), "confidence": num(r.get("confidence"))} for r in rows[::-1]]

    async def orders(self, symbol: str, since: int, limit: int) -> list[dict[str, Any]]:
        rows = await self._rows(
            "orders",
            "SELECT order_id, symbol, side, status, quantity, filled_quantity, avg_price, ts, reason FROM {table}{final} "
            "WHERE symbol = {symbol:String} AND ts >= {since:Int64} ORDER BY ts DESC LIMIT {n:UInt32}",
            {"symbol": symbol, "since": since, "n": limit},
        )
        out = []
        for r in rows[::-1]:
            c = clean(r, self.max_string)
            c.update(ts=ts_of(r.get("ts")), **{k: num(r.get(k)) for k in ("quantity", "filled_quantity", "avg_price")})
            out.append(c)
        return out

    async def positions(self) -> list[dict[str, Any]]:
        rows = await self._rows(
            "positions",
            "SELECT symbol, ts, quantity, avg_price, realized_pnl, unrealized_pnl, commission, currency FROM {table}{final} ORDER BY symbol",
        )
        out = []
        for r in rows:
            c = clean(r, self.max_string)
            c.update(ts=ts_of(r.get("ts")), **{k: num(r.get(k)) for k in ("quantity", "avg_price", "realized_pnl", "unrealized_pnl", "commission")})
            out.append(c)
        return out

    async def equity(self, points: int) -> dict[str, Any]:
        """The equity curve (at most ``points`` marks, the last one always kept) with its underwater
        curve, and the maximum and current drawdown of the whole curve."""
        rows = await self._rows("portfolio_value", "SELECT ts, equity, balance FROM {table}{final} ORDER BY ts")
        ts = np.array([ts_of(r.get("ts")) or 0 for r in rows], dtype=np.int64)
        equity = np.array([num(r.get("equity")) or np.nan for r in rows], dtype=np.float64)
        ok = np.isfinite(equity) & (equity > 0)
        ts, equity = ts[ok], equity[ok]
        balance = np.array([num(r.get("balance")) or np.nan for r, k in zip(rows, ok) if k], dtype=np.float64)
        if not len(equity):
            return {"points": [], "max_drawdown": None, "drawdown": None}
        dd = drawdown_curve(equity)
        summary = drawdown(ts, equity)
        keep = np.unique(np.r_[np.linspace(0, len(equity) - 1, min(points, len(equity))).astype(np.int64), len(equity) - 1])
        marks = [
            {"ts": int(ts[i]), "equity": float(equity[i]), "balance": float(balance[i]) if np.isfinite(balance[i]) else None, "drawdown": float(dd[i])}
            for i in keep
        ]
        return {"points": marks, "max_drawdown": summary.max, "drawdown": summary.current}

    async def performance(self) -> dict[str, Any]:
        rows = await self._rows(
            "performance_metrics",
            "SELECT name, window, argMax(value, ts) AS latest FROM {table} GROUP BY name, window ORDER BY name, window",
        )
        return {f"{clean(r.get('name'), 64)}" + (f" ({clean(r.get('window'), 16)})" if r.get("window") else ""): num(r.get("latest")) for r in rows}
