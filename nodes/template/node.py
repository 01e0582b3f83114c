"""The template node: every part of the node API in one small, real node.

- params: ``self.params`` (a validated :class:`SpreadWatchParams`)
- handlers: ``@handles("ticks")`` receives each message of input port ``ticks``
- timers: ``@every("stats_every")`` runs on the node's clock (simulated in backtests)
- publishing: ``await self.ctx.publish("alerts", alert)`` (contract-checked, routed by the topology)
- store access: ``self.ctx.table("tick_stats").query(...)``
- state is rebuilt in ``on_start`` and flushed in ``on_stop``

Its tests (``tests/test_template_node.py``) run it through the real runtime on the
in-process transport and the embedded ClickHouse store, which is how a plugin author
should test a node too.
"""

from __future__ import annotations

from dataclasses import dataclass

from framework.durations import parse_ms
from framework.node import Node, every, handles
from nodes.template.spec import SpreadWatchParams


@dataclass(slots=True)
class _Window:
    ticks: int = 0
    spread_sum: float = 0.0
    spread_max: float = 0.0


class SpreadWatch(Node[SpreadWatchParams]):
    async def on_start(self) -> None:
        self.windows: dict[str, _Window] = {}
        self.window_start: int | None = None
        self.last_alert: dict[str, int] = {}
        self.cooldown_ms = parse_ms(self.params.cooldown) or 0
        self.stats_ms = parse_ms(self.params.stats_every) or 60_000
        limits = self.params.max_spread_pips
        self.limits = {s: limits.get(s, limits.get("default", float("inf"))) for s in self.ctx.pairs}

    @handles("ticks")
    async def on_tick(self, tick: dict) -> None:
        symbol = tick["symbol"]
        if self.window_start is None:
            self.window_start = tick["ts"] - tick["ts"] % self.stats_ms
        # rounded: float noise must not turn a spread equal to the limit into an alert (3.0000000001 > 3)
        spread_pips = round((tick["ask"] - tick["bid"]) / self.ctx.instrument(symbol).pip, 6)
        window = self.windows.get(symbol)
        if window is None:
            window = self.windows[symbol] = _Window()
        window.ticks += 1
        window.spread_sum += spread_pips
        window.spread_max = max(window.spread_max, spread_pips)
        limit = self.limits.get(symbol, float("inf"))
        if spread_pips > limit and tick["ts"] - self.last_alert.get(symbol, -self.cooldown_ms) >= self.cooldown_ms:
            self.last_alert[symbol] = tick["ts"]
            await self.ctx.publish(
                "alerts",
                {
                    "alert_id": f"wide_spread-{symbol}-{tick['ts']}",
                    "ts": tick["ts"],
                    "source": self.ctx.service,
                    "type": "wide_spread",
                    "severity": "warning",
                    "message": f"{symbol} spread {spread_pips:.1f} pips exceeds {limit:g}",
                    "symbol": symbol,
                    "value": round(spread_pips, 3),
                    "threshold": limit,
                },
            )

    @every("stats_every")
    async def write_stats(self) -> None:
        """Close the current interval: one tick_stats row per symbol that quoted in it.

        Rows are stamped with the interval's start in event time (the first tick's time
        floored to ``stats_every``), so they are right even when this service runs in a
        process whose clock nothing drives.
        """
        start, self.window_start = self.window_start, None
        windows, self.windows = self.windows, {}
        if start is None:
            return
        for symbol, w in sorted(windows.items()):
            await self.ctx.publish(
                "stats",
                {
                    "symbol": symbol,
                    "ts": start,
                    "ticks": w.ticks,
                    "spread_mean_pips": round(w.spread_sum / w.ticks, 4),
                    "spread_max_pips": round(w.spread_max, 4),
                },
            )

    async def busiest(self, limit: int = 3) -> list[dict]:
        """Store access example: the symbols with the most quotes so far."""
        return await self.ctx.table("tick_stats").query(
            "SELECT symbol, sum(ticks) AS ticks FROM {table} GROUP BY symbol ORDER BY ticks DESC LIMIT {n:UInt32}",
            {"n": limit},
        )

    async def on_stop(self) -> None:
        if self.windows:
            await self.write_stats()
